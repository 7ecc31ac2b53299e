"""Print the zoo capability table (model x capability: pass / refused with message).

Usage: ``PYTHONPATH=. python tests/zoo_table.py`` (seconds on a CPU). Each cell runs the public
call on a zoo model left in train mode with frozen parameters and checks that the model comes
back bit-identical; "pass" means it ran and left the model unchanged.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import glminterp as gi  # noqa: E402
from tests.zoo import ZOO, assert_unchanged, frozen_train_mode, state_snapshot, zoo_input  # noqa: E402


def _cell(entry, fn) -> str:
    model = frozen_train_mode(entry.build(seed=0))
    snap = state_snapshot(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(model)
    except Exception as e:  # noqa: BLE001 - the table reports every refusal
        assert_unchanged(model, snap)
        return f"refused: {type(e).__name__}: {str(e).split('. ')[0][:110]}"
    assert_unchanged(model, snap)
    return "pass"


def _refit(entry, model):
    """Refit on N=600 responses drawn from a 3-output copy of the network (its own head is the
    true model); the copy is run in train mode with frozen parameters like the others."""
    k = 3 if entry.link == "softmax" else entry.n_classes
    net = entry.factory(seed=0, in_channels=entry.in_channels, n_classes=k)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((600, *entry.input_shape), generator=g)
    with torch.no_grad():
        eta = net(x).double()  # the factory returns the model in eval mode
    if entry.link == "softmax":
        y = torch.multinomial(torch.softmax(eta, 1), 1, generator=g)[:, 0]
    elif entry.link == "sigmoid":
        y = torch.bernoulli(torch.sigmoid(eta), generator=g)
    else:
        y = eta + 0.5 * torch.randn(eta.shape, generator=g, dtype=torch.float64)
    frozen_train_mode(net)
    snap = state_snapshot(net)
    acts = gi.extract_activations(net, (x, y), split="refit", progress=False)
    assert_unchanged(net, snap)
    gi.refit_output_layer(acts, progress=False)


def main() -> None:
    caps = {
        "extract": lambda e, m: gi.extract_activations(m, zoo_input(e), progress=False),
        "refit": _refit,
        "CAM": lambda e, m: gi.class_activation_maps(m, zoo_input(e, 3), classes=0),
        "Grad-CAM": lambda e, m: gi.class_activation_maps(
            m, zoo_input(e, 3), classes=0, method="gradcam", layer=e.gradcam_layer),
        "receptive field": lambda e, m: gi.receptive_field(m, e.gradcam_layer, e.input_shape),
        "occlusion": lambda e, m: gi.occlusion(m, zoo_input(e, 3), target=0, window=3, stride=2),
        "deconvnet": lambda e, m: gi.deconvnet(m, zoo_input(e, 3), layer=e.gradcam_layer,
                                               channel=0),
    }
    print("| model | " + " | ".join(caps) + " |")
    print("| --- " * (len(caps) + 1) + "|")
    for name, entry in ZOO.items():
        cells = []
        for cap, fn in caps.items():
            if cap in ("Grad-CAM", "receptive field", "deconvnet") and entry.gradcam_layer is None:
                cells.append("n/a (no conv map)")
                continue
            cells.append(_cell(entry, lambda m, fn=fn, e=entry: fn(e, m)))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
