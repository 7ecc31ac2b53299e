"""The head's input recorded through a tap on the head's ``forward`` (no hook), and the head's
output vouching for it.

The tap must leave the model as found (no ``forward`` left on an instance, no hook), fall back
to hooks where a module has its own ``forward``, refuse a head that runs twice, and every
non-finite head input must still be refused, named by unit and sample, whether the head's
output vouches for the batch or not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _hostile_support import TinyNet, tiny_x
from torch import nn

import glminterp as gi
from glminterp._head_tap import HeadTap
from glminterp._recording import Rows
from glminterp.hooks import ForwardTap, ReusedModuleError, can_tap


def _ids(n: int = 12) -> list[str]:
    return [f"s{i:02d}" for i in range(n)]


def _head_input(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """The head's input in the model's own forward pass, run in the same batches."""
    with torch.inference_mode():
        parts = [model.act(model.fc1(x[s : s + batch_size])) for s in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy()


def _untouched(model: nn.Module) -> bool:
    return not any("forward" in m.__dict__ or m._forward_hooks or m._forward_pre_hooks
                   for m in model.modules())


class Wide(nn.Module):
    """4 inputs -> 6 units through ``act`` -> 2 outputs (K < p: the head's output vouches)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act, self.fc = nn.Linear(4, 6), act, nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.fc1(x)))


class Exp(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.exp(z)


class Log(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log(z)


def test_the_head_tap_is_set_during_the_pass_and_gone_after():
    model = Wide(nn.Sigmoid())
    seen = []
    model.fc1.register_forward_hook(
        lambda m, i, o: seen.append(("forward" in model.fc.__dict__, len(model.fc._forward_pre_hooks)))
    )
    gi.extract_activations(model, tiny_x(), progress=False, batch_size=5)
    model.fc1._forward_hooks.clear()
    # the trace runs unhooked; then every batch finds the head tapped, never hooked
    assert seen[0] == (False, 0) and all(s == (True, 0) for s in seen[1:]) and len(seen) == 4
    assert _untouched(model)


def test_taps_are_removed_when_the_forward_pass_raises():
    class Boom(Wide):
        calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:  # head detection, batch 1, then batch 2 raises
                raise RuntimeError("boom")
            return super().forward(x)

    model = Boom(nn.ReLU())
    with pytest.raises(RuntimeError, match="boom"):
        gi.extract_activations(model, tiny_x(), progress=False, batch_size=5)
    assert _untouched(model)


def test_a_head_with_its_own_forward_is_hooked_and_keeps_it():
    model = Wide(nn.ReLU())
    own = model.fc.forward  # a bound method set on the instance: not tapped over
    model.fc.forward = own
    assert not can_tap(model.fc)
    acts = gi.extract_activations(model, tiny_x(), progress=False, batch_size=5)
    assert model.fc.__dict__["forward"] is own and not model.fc._forward_pre_hooks
    assert acts.head_features().to_numpy().tobytes() == _head_input(model, tiny_x(), 5).tobytes()


def test_forward_tap_refuses_a_module_with_its_own_forward_and_restores_only_itself():
    lin = nn.Linear(2, 2)
    tap = ForwardTap(lin, lambda f: (lambda *a, **k: f(*a, **k) * 0))
    assert torch.equal(lin(torch.ones(1, 2)), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="own forward"):
        ForwardTap(lin, lambda f: f)
    tap.remove()
    tap.remove()  # idempotent
    assert "forward" not in lin.__dict__ and not torch.equal(lin(torch.ones(1, 2)), torch.zeros(1, 2))


def test_a_head_run_twice_is_refused():
    class Twice(TinyNet):
        def __init__(self):
            super().__init__(k=3)

        def forward(self, x):
            return self.fc(self.act(self.fc(self.act(self.fc1(x)))))

    with pytest.raises(ReusedModuleError, match="runs 2 times"):
        gi.extract_activations(Twice(), tiny_x(), progress=False, layers=["fc#in"])


@pytest.mark.parametrize(("module", "vouches"), [
    (nn.Linear(6, 2), True),
    (nn.Linear(6, 6), False),  # K = p: summing the output saves nothing
    (nn.Linear(2, 6), False),
    (type("Sub", (nn.Linear,), {})(6, 2), False),  # a subclass may compute anything
])
def test_the_head_vouches_only_as_a_plain_linear_with_fewer_outputs(module, vouches):
    tap = HeadTap(module, "fc#in", Rows(4), {})
    try:
        assert tap.vouch is vouches
    finally:
        tap.remove()
    dead = nn.Linear(6, 2)
    with torch.no_grad():
        dead.weight[:, 3] = 0.0  # an input the output cannot show
    tap = HeadTap(dead, "fc#in", Rows(4), {})
    assert tap.vouch is False
    tap.remove()


@pytest.mark.parametrize(("act", "row", "value"), [
    (Exp(), 3, 200.0),  # exp overflows: inf in the head's input, from a finite input
    (Log(), 9, -1.0),  # log of a negative unit: NaN
])
@pytest.mark.parametrize("batch_size", [4, 12])
def test_non_finite_head_inputs_are_refused_with_a_vouching_head(act, row, value, batch_size):
    model = Wide(act)
    x = tiny_x().abs() * 0.01
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
        model.fc1.bias.fill_(0.0)
        x[row, :] = value / 4
    assert HeadTap(model.fc, "fc#in", Rows(1), {}).vouch  # (its tap, removed below)
    model.fc.__dict__.pop("forward")
    with pytest.raises(ValueError, match="activations are NaN or inf") as e:
        gi.extract_activations(model, (x, torch.arange(12) % 2, _ids()), progress=False,
                               batch_size=batch_size)
    assert f"'s{row:02d}'" in str(e.value) and "act:" in str(e.value)
    assert _untouched(model)


def test_a_user_hook_cleaning_the_head_output_in_place_does_not_hide_a_bad_input():
    model = Wide(Exp())
    x = tiny_x().abs() * 0.01
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
        x[5, :] = 60.0  # exp(240): inf
    model.fc.register_forward_hook(lambda m, i, o: o.nan_to_num_(nan=0.0, posinf=1.0))
    with pytest.raises(ValueError, match=r"activations are NaN or inf.*'s05'"):
        gi.extract_activations(model, (x, torch.arange(12) % 2, _ids()), progress=False,
                               batch_size=4)


def test_a_head_output_past_float32_range_from_finite_inputs_is_kept():
    model = Wide(nn.Sigmoid())
    with torch.no_grad():
        model.fc.weight.fill_(3e38)  # sigmoid units near 1: the logits overflow to inf
    x = tiny_x()
    acts = gi.extract_activations(model, (x, torch.arange(12) % 2, _ids()), progress=False,
                                  batch_size=5)
    assert acts.head_features().to_numpy().tobytes() == _head_input(model, x, 5).tobytes()
    assert np.isfinite(acts.head_features().to_numpy()).all()


@pytest.mark.parametrize("shape", [(256, 100, 10), (256, 512, 10), (256, 100, 2), (256, 100, 1),
                                   (7, 3, 2)])
def test_head_output_row_is_non_finite_for_any_non_finite_input(shape):
    """The premise of the vouching head, on this torch build's kernels at head shapes."""
    n, p, k = shape
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(p, k)
    with torch.no_grad():
        lin.weight[1:, 0] = 0.0  # column 0 is read by one output only
    x = torch.rand(n, p, generator=g)
    cols = torch.randint(0, p, (n,), generator=g)
    cols[:3] = 0
    vals = torch.tensor([math.nan, math.inf, -math.inf]).repeat(n // 3 + 1)[:n]
    rows = torch.arange(n)
    x[rows[::2], cols[::2]] = vals[::2]  # odd rows stay finite
    with torch.inference_mode():
        out = lin(x)
    assert torch.equal(~torch.isfinite(out).all(dim=1), ~torch.isfinite(x).all(dim=1))


def test_no_reference_cycle_keeps_the_recorded_rows_alive():
    """Dropping the result frees its buffers at once (not at the next garbage collection), so
    a following extraction can reuse that memory instead of faulting in fresh pages."""
    import gc

    from glminterp._recording import Rows

    model = gi.build_model("mlp", seed=0)
    x = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    gc.collect()
    gc.disable()
    try:
        acts = gi.extract_activations(model, x, progress=False)
        assert acts.head_features().shape == (300, 100)
        del acts
        alive = [o for o in gc.get_objects() if type(o) in (Rows, HeadTap, ForwardTap)]
    finally:
        gc.enable()
    assert alive == []
