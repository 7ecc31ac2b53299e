"""CAM throughput versus torchcam on the same batch, and the cost of SE / z maps.

Rows (best of ``--repeats``, interleaved so machine noise hits both sides):

1. CAM, one class: ``class_activation_maps(..., parametrization="network", upsample=False)``
   versus torchcam's ``CAM`` (forward under inference_mode + extractor call); both min-max
   normalised at feature resolution. Ratio = torchcam time / ours (goal: >= 1, parity).
2. Grad-CAM, one class, same comparison against torchcam's ``GradCAM``.
3. SE and z maps: CAM with a covariance (``simultaneous=False``) versus the same CAM without,
   all classes, upsampled to the input. Ratio = with / without (goal: <= 2).
4. The simulated simultaneous threshold (``n_sim`` draws) as a multiple of the plain CAM.

Usage: ``python benchmarks/cam.py [--n 512] [--size 28] [--repeats 5] [--n-sim 500]
[--width 32]`` (``--width 512``: a ResNet-18-wide head, where the threshold is simulated in
coefficient space).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torchcam.methods import CAM, GradCAM

import glminterp as gi
from glminterp.maps.cam import class_activation_maps


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def torchcam_cam(model, x):
    with CAM(model, "relu3", "fc") as ex:
        with torch.inference_mode():
            model(x)
        return ex(class_idx=0)[0]


def torchcam_gradcam(model, x):
    with GradCAM(model, "relu3") as ex:
        scores = model(x)
        return ex(class_idx=0, scores=scores)[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-sim", type=int, default=500)
    ap.add_argument("--width", type=int, default=32, help="channels of the last conv (p)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = gi.GapCNN(widths=(16, 32, args.width)).eval()
    x = torch.rand(args.n, 1, args.size, args.size)
    p = args.width
    rng = np.random.default_rng(0)
    coefs = rng.normal(size=(p + 1, 10))
    root = rng.normal(size=(10, p + 1, p + 1)) / np.sqrt(p)
    covs = root @ root.transpose(0, 2, 1) * 0.01
    head = gi.detect_head(model, x[:2])
    print(f"GapCNN(16, 32, {p}), {args.n} random {args.size}x{args.size} images, one batch, "
          f"1 thread, best of {args.repeats}")
    print(f"{'what':<44} {'base s':>8} {'ours s':>8} {'ratio':>7}")

    def row(label, base_fn, ours_fn, ratio_of):
        b, o = 0.0, 0.0
        bt, ot = [], []
        for _ in range(args.repeats):  # interleaved
            bt.append(best(base_fn, 1))
            ot.append(best(ours_fn, 1))
        b, o = min(bt), min(ot)
        print(f"{label:<44} {b:8.4f} {o:8.4f} {ratio_of(b, o):7.2f}")

    kw = dict(head=head, batch_size=args.n, upsample=False)
    row("CAM 1 class: torchcam / ours (>= 1 is parity)",
        lambda: torchcam_cam(model, x),
        lambda: class_activation_maps(model, x, 0, parametrization="network", **kw),
        lambda b, o: b / o)
    row("Grad-CAM 1 class: torchcam / ours",
        lambda: torchcam_gradcam(model, x),
        lambda: class_activation_maps(model, x, 0, method="gradcam", layer="relu3", **kw),
        lambda b, o: b / o)
    kw_all = dict(head=head, batch_size=args.n, upsample=True)
    row("SE + z, 10 classes: with / without (<= 2)",
        lambda: class_activation_maps(model, x, coefficients=coefs, **kw_all),
        lambda: class_activation_maps(model, x, coefficients=(coefs, covs), simultaneous=False,
                                      **kw_all),
        lambda b, o: o / b)
    row(f"SE + z + simultaneous (n_sim={args.n_sim}) / CAM",
        lambda: class_activation_maps(model, x, coefficients=coefs, **kw_all),
        lambda: class_activation_maps(model, x, coefficients=(coefs, covs), n_sim=args.n_sim,
                                      **kw_all),
        lambda b, o: o / b)


if __name__ == "__main__":
    main()
