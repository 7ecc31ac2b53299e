"""Extraction's cheaper storage gives exactly what the network computed.

The head's input, the logits and the conv maps are copied into preallocated float32 buffers
(numpy's copy for CPU float32, torch's otherwise; a list of copies past the announced row
count); the default ids and a constant split column are built by Arrow casts when pandas keeps
strings in Arrow. Every value is compared bit for bit with the model's own forward pass run the
same way (same batches, inference mode), and the model is left as found.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from zoo import ZOO, assert_unchanged, frozen_train_mode, state_snapshot, zoo_input

import glminterp as gi
from glminterp._frame_strings import constant_strings, default_ids
from glminterp._input_check import _reads_every_input


def _batched(fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([fn(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)])


class Recorder:
    """Forward hooks keeping copies of a module's output (or input), per batch."""

    def __init__(self, module: nn.Module, pre: bool = False) -> None:
        self.parts: list[torch.Tensor] = []
        if pre:
            self.h = module.register_forward_pre_hook(lambda m, i: self.parts.append(i[0].clone()))
        else:
            self.h = module.register_forward_hook(lambda m, i, o: self.parts.append(o.clone()))

    def done(self) -> np.ndarray:
        self.h.remove()
        return torch.cat(self.parts).numpy()


def test_mlp_head_input_and_logits_are_the_forward_pass_bit_for_bit():
    model = gi.build_model("mlp", seed=0).eval()
    x = torch.rand((700, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    acts = gi.extract_activations(model, (x, torch.arange(700) % 10), batch_size=256,
                                  progress=False)
    rec = Recorder(model.out, pre=True)
    logits = _batched(model, x, 256)
    want = rec.done()
    got = acts.head_features().to_numpy()
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    probs = torch.softmax(logits.double(), 1).numpy()
    np.testing.assert_allclose(acts.obs[acts.prob_columns].to_numpy(), probs, rtol=1e-6)
    assert acts.obs["pred"].tolist() == probs.argmax(1).tolist()


@pytest.mark.parametrize("batch_size", [7, 256])
def test_gap_maps_and_head_input_are_the_forward_pass_bit_for_bit(batch_size):
    model = gi.build_model("gap_cnn", seed=0).eval()
    x = torch.rand((40, 1, 28, 28), generator=torch.Generator().manual_seed(2))
    acts = gi.extract_activations(model, x, keep_maps=True, batch_size=batch_size,
                                  progress=False)
    maps_rec, head_rec = Recorder(model.relu3), Recorder(model.fc, pre=True)
    _batched(model, x, batch_size)
    maps, head_in = maps_rec.done(), head_rec.done()
    assert acts.maps["relu3"].dtype == np.float32
    assert acts.maps["relu3"].tobytes() == maps.tobytes()
    assert acts.head_features().to_numpy().tobytes() == head_in.tobytes()


class _Stream(torch.utils.data.IterableDataset):
    """Yields ``(x, y)`` rows; ``__len__`` may understate them (extraction must not trust it)."""

    def __init__(self, x, y, claimed=None) -> None:
        self.x, self.y, self.claimed = x, y, claimed

    def __iter__(self):
        return iter(zip(self.x, self.y, strict=True))

    def __len__(self) -> int:
        return self.claimed if self.claimed is not None else len(self.x)


@pytest.mark.parametrize("claimed", [None, 25])
def test_more_rows_than_announced_keep_every_row_and_map(claimed):
    model = gi.build_model("gap_cnn", seed=0).eval()
    x = torch.rand((60, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    y = torch.arange(60) % 10
    whole = gi.extract_activations(model, (x, y), keep_maps=True, batch_size=16, progress=False)
    loader = torch.utils.data.DataLoader(_Stream(x, y, claimed), batch_size=16)
    streamed = gi.extract_activations(model, loader, keep_maps=True, progress=False)
    assert streamed.maps["relu3"].tobytes() == whole.maps["relu3"].tobytes()
    pd.testing.assert_frame_equal(streamed.features, whole.features, check_exact=True)
    pd.testing.assert_frame_equal(streamed.obs, whole.obs, check_exact=True)


def test_float64_model_gives_float32_rows_and_maps_cast_once():
    model = gi.build_model("gap_cnn", seed=0).double().eval()
    x = torch.rand((20, 1, 28, 28), generator=torch.Generator().manual_seed(4)).double()
    acts = gi.extract_activations(model, x, keep_maps=True, batch_size=8, progress=False)
    maps_rec, head_rec = Recorder(model.relu3), Recorder(model.fc, pre=True)
    _batched(model, x, 8)
    assert acts.maps["relu3"].tobytes() == maps_rec.done().astype(np.float32).tobytes()
    got = acts.head_features().to_numpy()
    assert got.tobytes() == head_rec.done().astype(np.float32).tobytes()


def test_gap_input_layer_pooled_by_max_is_still_pooled():
    model = gi.build_model("gap_cnn", seed=0).eval()
    x = torch.rand((30, 1, 28, 28), generator=torch.Generator().manual_seed(5))
    acts = gi.extract_activations(model, x, ["relu3"], pool="max", batch_size=8, progress=False)
    rec = Recorder(model.relu3)
    _batched(model, x, 8)
    want = torch.from_numpy(rec.done()).amax(dim=(2, 3)).numpy()
    assert acts.features.to_numpy().tobytes() == want.tobytes()


class DoublesInput(nn.Module):
    """Doubles its input in place before its layers run."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act, self.out = nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2)
        return self.out(self.act(self.fc1(x)))


def test_head_tracing_does_not_run_an_in_place_model_twice_on_the_first_rows():
    net = DoublesInput()
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(6))
    x = x0.clone()
    acts = gi.extract_activations(net, x, batch_size=3, progress=False)
    torch.testing.assert_close(x, 2 * x0, rtol=0, atol=0)  # every row doubled once
    with torch.no_grad():
        want = net.act(net.fc1(2 * x0)).numpy()
    np.testing.assert_array_equal(acts.head_features().to_numpy(), want)


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet", "densenet"])
def test_maps_of_a_train_mode_batchnorm_model_leave_it_as_found(name):
    entry = ZOO[name]
    model = frozen_train_mode(entry.build())
    snap = state_snapshot(model)
    layer = entry.cam_layer or entry.gradcam_layer
    acts = gi.extract_activations(model, zoo_input(entry, n=9), [layer], keep_maps=True,
                                  batch_size=4, progress=False)
    assert_unchanged(model, snap)
    assert acts.maps[layer].shape[0] == 9 and np.isfinite(acts.maps[layer]).all()


@pytest.mark.filterwarnings("ignore:The 'future.infer_string' option")  # pandas 2's default
@pytest.mark.parametrize("infer_string", [True, False])
@pytest.mark.parametrize("n", [0, 1, 11, 1234])
def test_arrow_built_ids_and_split_equal_what_pandas_builds(n, infer_string):
    with pd.option_context("future.infer_string", infer_string):
        pd.testing.assert_index_equal(
            default_ids(n), pd.Index(np.arange(n).astype(str), name="sample_id"), exact=True
        )
        got = pd.DataFrame({"split": constant_strings("refit", n)})
        want = pd.DataFrame({"split": np.full(n, "refit")})
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert got["split"].dtype == want["split"].dtype


def test_extraction_frames_use_pandas_string_dtype():
    x = torch.rand((5, 1, 28, 28), generator=torch.Generator().manual_seed(7))
    acts = gi.extract_activations(gi.build_model("mlp", seed=0), x, progress=False)
    want_dtype = pd.Index(np.array(["0"])).dtype
    assert acts.features.index.dtype == want_dtype
    assert acts.obs["split"].dtype == pd.Series(np.array(["all"])).dtype
    assert list(acts.obs.index) == ["0", "1", "2", "3", "4"]
    assert (acts.obs["split"] == "all").all()


@pytest.mark.parametrize(
    ("weight", "vouches"),
    [
        ([[1.0, 0.0, 0.0], [0.0, 1.0, -2.0]], True),
        ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], False),  # column 2 unweighted
        ([[1.0, 0.0, 1e-40], [0.0, 1.0, 0.0]], False),  # subnormal in float32 and bfloat16
        ([[1.0, math.nan, 1.0], [0.0, 1.0, 1.0]], False),  # a NaN weight: never vouch
        ([[math.inf, -1.0, 3.0], [0.0, 0.0, 0.0]], True),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_first_linear_vouches_only_when_every_input_column_is_weighted(weight, vouches, dtype):
    layer = nn.Linear(3, 2).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64))
    if dtype == torch.float64 and weight[0][2] == 1e-40:
        vouches = True  # a normal number in float64
    assert _reads_every_input(layer) is vouches
