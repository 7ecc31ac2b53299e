"""The cheaper placement of extraction's checks still refuses every bad input.

Inputs are checked after their forward pass (still in cache) unless the model changes them in
place or their version cannot be tracked; the head's input is checked batch by batch on its
float32 copy; in-memory labels and ids are checked whole; default ids and column names are
built only when a frame needs them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _hostile_support import TinyNet, tiny_x
from torch import nn

import glminterp as gi


class ClampsInPlace(TinyNet):
    """Changes its input in place first: inf becomes 1 before any layer sees it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(-1.0, 1.0)
        return super().forward(x)


def _ids(n: int = 12) -> list[str]:
    return [f"s{i:02d}" for i in range(n)]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("row", [1, 6, 11])
def test_in_place_model_still_sees_the_bad_input_refused(row, value):
    x = tiny_x()
    x[row, 1] = value
    with pytest.raises(ValueError, match="NaN or inf") as e:
        gi.extract_activations(ClampsInPlace(), (x, torch.arange(12) % 2, _ids()),
                               progress=False, batch_size=4)
    assert f"'s{row:02d}'" in str(e.value)


def test_inference_tensor_inputs_are_checked_before_the_forward_pass():
    with torch.inference_mode():  # no version counter: the check cannot come after
        x = tiny_x().clone()
        x[9, 0] = math.inf
    with pytest.raises(ValueError, match=r"sample ids \['s09'\]"):
        gi.extract_activations(ClampsInPlace(), (x, torch.arange(12) % 2, _ids()),
                               progress=False, batch_size=4)


def test_float64_head_input_past_float32_range_is_refused():
    net = TinyNet().double()
    with torch.no_grad():
        net.fc1.weight.fill_(1e38)  # finite in float64, inf once stored as float32
        net.fc1.bias.zero_()
    x = tiny_x().double().abs()
    with pytest.raises(ValueError, match="activations are NaN or inf") as e:
        gi.extract_activations(net, (x, torch.arange(12) % 2, _ids()), progress=False,
                               batch_size=4)
    assert "'s00'" in str(e.value) and "act:" in str(e.value)


def test_finite_in_place_model_records_the_clamped_inputs():
    x = tiny_x() * 3
    net = ClampsInPlace()
    acts = gi.extract_activations(net, (x.clone(), torch.arange(12) % 2, _ids()),
                                  progress=False, batch_size=5)
    with torch.no_grad():
        want = net.act(net.fc1(x.clamp(-1, 1))).numpy()
    np.testing.assert_allclose(acts.head_features().to_numpy(), want, rtol=1e-6, atol=1e-7)


def test_lazy_ids_and_columns_match_the_eager_ones():
    x = tiny_x(10)
    acts = gi.extract_activations(TinyNet(), x, progress=False, batch_size=3)
    assert list(acts.features.index) == [str(i) for i in range(10)]
    assert acts.features.index.name == "sample_id"
    assert list(acts.features.columns) == ["act:000", "act:001", "act:002"]
    assert (acts.obs.index == acts.features.index).all()
    assert acts.obs["label"].isna().all() and (acts.obs["split"] == "all").all()


def test_lazy_frames_do_not_alias_the_callers_ids():
    x, ids = tiny_x(6), np.array([f"r{i}" for i in range(6)])
    acts = gi.extract_activations(TinyNet(), (x, torch.arange(6) % 2, ids), progress=False)
    ids[0] = "changed"  # after extraction, before the first frame access
    assert acts.features.index[0] == "r0"


def test_split_series_needs_every_default_id():
    import pandas as pd

    split = pd.Series(["train"] * 5, index=[str(i) for i in range(5)])
    with pytest.raises(ValueError, match="no entry for 1 sample ids"):
        gi.extract_activations(TinyNet(), tiny_x(6), progress=False, split=split)


def test_dataloader_path_still_collects_labels_and_ids():
    x = tiny_x(7)
    ds = torch.utils.data.TensorDataset(x, torch.arange(7) % 2, torch.arange(10, 17))
    acts = gi.extract_activations(TinyNet(), torch.utils.data.DataLoader(ds, batch_size=3),
                                  progress=False)
    assert list(acts.obs.index) == [str(i) for i in range(10, 17)]
    assert acts.obs["label"].tolist() == [0, 1, 0, 1, 0, 1, 0]


def test_model_left_as_found_after_the_fast_path():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gi.extract_activations(net, tiny_x(), progress=False, batch_size=5)
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


# ---------------------------------------------------------------- the "linear" placement
class Sanitizes(TinyNet):
    """Replaces NaN/inf before its first layer: the layer's output cannot vouch for x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0))


def _modes(net, x, batch_size=4):
    """The input-check mode extraction chose (spied on the checker)."""
    from glminterp import _input_check

    seen = []
    orig = _input_check.InputCheck.decide

    def spy(self, *a):
        orig(self, *a)
        seen.append(self.mode)

    _input_check.InputCheck.decide = spy
    try:
        gi.extract_activations(net, x, progress=False, batch_size=batch_size)
    finally:
        _input_check.InputCheck.decide = orig
    return seen


def test_first_linear_reading_the_batch_checks_through_its_output():
    assert _modes(TinyNet(), tiny_x()) == ["linear"]
    mlp = gi.build_model("mlp", seed=0)  # Flatten -> Linear: a view of the batch
    assert _modes(mlp, torch.rand(12, 1, 28, 28)) == ["linear"]
    assert _modes(Sanitizes(), tiny_x()) == ["after"]
    assert _modes(ClampsInPlace(), tiny_x()) == ["before"]
    dead = TinyNet()
    with torch.no_grad():
        dead.fc1.weight[:, 2] = 0.0  # an input no unit reads: its inf would not show
    assert _modes(dead, tiny_x()) == ["after"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("net", [Sanitizes, "dead_column"])
def test_inputs_the_first_layer_cannot_vouch_for_are_refused(net, value):
    if net == "dead_column":
        net = TinyNet()
        with torch.no_grad():
            net.fc1.weight[:, 2] = 0.0
    else:
        net = net()
    x = tiny_x()
    x[7, 2] = value
    with pytest.raises(ValueError, match=r"NaN or inf.*'s07'"):
        gi.extract_activations(net, (x, torch.arange(12) % 2, _ids()), progress=False,
                               batch_size=4)


@pytest.mark.parametrize("shape", [(5, 4, 3), (300, 784, 100)])
def test_linear_output_row_is_non_finite_for_any_non_finite_input(shape):
    """The premise of the "linear" placement, on this torch build's kernels."""
    n, p, h = shape
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(p, h)
    with torch.no_grad():
        lin.weight[1:, 0] = 0.0  # column 0 is read by one unit only
    x = torch.rand(n, p, generator=g)
    rows = torch.arange(n)
    cols = torch.randint(0, p, (n,), generator=g)
    cols[:3] = 0
    vals = torch.tensor([math.nan, math.inf, -math.inf]).repeat(n // 3 + 1)[:n]
    x[rows[::2], cols[::2]] = vals[::2]  # odd rows stay finite
    with torch.inference_mode():
        out = lin(x)
    bad_out = ~torch.isfinite(out).all(dim=1)
    assert torch.equal(bad_out, ~torch.isfinite(x).all(dim=1))


@pytest.mark.parametrize("row", [2, 8])
def test_dataloader_batches_are_checked_whatever_the_model_does(row):
    x = tiny_x()
    x[row, 3] = math.inf
    ds = torch.utils.data.TensorDataset(x, torch.arange(12) % 2, torch.arange(12))
    for net in (TinyNet(), ClampsInPlace()):
        with pytest.raises(ValueError, match=rf"sample ids \['{row}'\]"):
            gi.extract_activations(net, torch.utils.data.DataLoader(ds, batch_size=4),
                                   progress=False)
