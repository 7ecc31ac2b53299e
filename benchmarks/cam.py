"""CAM throughput versus torchcam on the same batch, and the cost of SE / z maps.

Rows (best of ``--repeats``, interleaved so machine noise hits both sides):

1. CAM, one class: ``class_activation_maps(..., parametrization="network", upsample=False)``
   versus torchcam's ``CAM`` (forward under inference_mode + extractor call); both min-max
   normalised at feature resolution. Ratio = torchcam time / ours (goal: >= 1, parity).
2. Grad-CAM, one class, same comparison against torchcam's ``GradCAM``.
3. SE and z maps: CAM with a covariance (``simultaneous=False``) versus the same CAM without,
   all classes, upsampled to the input. Ratio = with / without (goal: <= 2).
4. The default call with a covariance (SE, z and the simultaneous threshold at ``n_sim``
   draws, default 2000) as a multiple of the plain CAM (goal: <= 3), and of torchcam's CAM of
   one class (no statistics at all).

Rows 3-4 are repeated for every ``--widths`` (channels ``p`` of the last conv; 512 is a
ResNet-18-wide head), each against its own baseline measured in the same run.

Usage: ``python benchmarks/cam.py [--n 512] [--size 28] [--repeats 3] [--n-sim 2000]
[--widths 32,128,512] [--cpu-time]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torchcam.methods import CAM, GradCAM

import glminterp as gi
from glminterp.maps.cam import class_activation_maps

CLOCK = time.perf_counter


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
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


def _setup(width: int, n: int, size: int):
    torch.manual_seed(0)
    model = gi.GapCNN(widths=(16, 32, width)).eval()
    x = torch.rand(n, 1, size, size)
    rng = np.random.default_rng(0)
    coefs = rng.normal(size=(width + 1, 10))
    root = rng.normal(size=(10, width + 1, width + 1)) / np.sqrt(width)
    covs = root @ root.transpose(0, 2, 1) * 0.01
    return model, x, coefs, covs, gi.detect_head(model, x[:2])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-sim", type=int, default=2000)
    ap.add_argument("--widths", default="32,128,512", help="channels of the last conv (p)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process CPU time (one thread: the work done), not wall "
                         "clock; for a machine shared with other jobs")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(1)
    widths = [int(w) for w in args.widths.split(",")]
    print(f"GapCNN(16, 32, p), {args.n} random {args.size}x{args.size} images, one batch, "
          f"1 thread, best of {args.repeats} (interleaved), "
          f"{'CPU' if args.cpu_time else 'wall'} time")
    print(f"{'what':<52} {'base s':>8} {'ours s':>8} {'ratio':>7}")

    def row(label, base_fn, ours_fn, ratio_of):
        bt, ot = [], []
        for _ in range(args.repeats):  # interleaved
            bt.append(best(base_fn, 1))
            ot.append(best(ours_fn, 1))
        b, o = min(bt), min(ot)
        print(f"{label:<52} {b:8.4f} {o:8.4f} {ratio_of(b, o):7.2f}", flush=True)

    for i, p in enumerate(widths):
        _width_rows(p, args, row, parity=i == 0)


def _width_rows(p: int, args, row, parity: bool) -> None:
    """Rows of one head width, each against its own baseline."""
    model, x, coefs, covs, head = _setup(p, args.n, args.size)
    kw = dict(head=head, batch_size=args.n, upsample=False)
    if parity:
        row(f"p={p} CAM 1 class: torchcam / ours (>= 1 is parity)",
            lambda: torchcam_cam(model, x),
            lambda: class_activation_maps(model, x, 0, parametrization="network", **kw),
            lambda b, o: b / o)
        row(f"p={p} Grad-CAM 1 class: torchcam / ours",
            lambda: torchcam_gradcam(model, x),
            lambda: class_activation_maps(model, x, 0, method="gradcam", layer="relu3", **kw),
            lambda b, o: b / o)
    kw_all = dict(head=head, batch_size=args.n, upsample=True)

    def cam():
        return class_activation_maps(model, x, coefficients=coefs, **kw_all)

    def default():  # the default call with a covariance: SE, z and the threshold
        return class_activation_maps(model, x, coefficients=(coefs, covs), n_sim=args.n_sim,
                                     **kw_all)

    row(f"p={p} SE + z, 10 classes: with / without (<= 2)", cam,
        lambda: class_activation_maps(model, x, coefficients=(coefs, covs),
                                      simultaneous=False, **kw_all),
        lambda b, o: o / b)
    row(f"p={p} + simultaneous (n_sim={args.n_sim}) / CAM (<= 3)", cam, default,
        lambda b, o: o / b)
    row(f"p={p} same / torchcam CAM of one class", lambda: torchcam_cam(model, x), default,
        lambda b, o: o / b)


if __name__ == "__main__":
    main()
