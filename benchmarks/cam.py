"""CAM cost: the default call with a covariance (SE, z and the simultaneous threshold) as a
multiple of the plain CAM call, and of torchcam's CAM, on the same model and input.

Two models, each at head widths ``p`` (channels of the last conv; default 32, 128, 512):

- ``mnist``: ``GapCNN(16, 32, p)`` on 28 x 28 single-channel images (7 x 7 cells);
- ``resnet18``: a ResNet-18-shaped network written here (torchvision's layout: 7 x 7 stem,
  max-pool, four stages of two ``BasicBlock``s with widths 64, 128, 256, ``p``, average pool,
  ``fc``) on 224 x 224 RGB images (7 x 7 cells).

Ten classes, random head weights and random positive definite class covariances (one
``(p + 1) x (p + 1)`` matrix per class), random inputs. Timed calls (the public calls a user
makes, all checks included; CPU time of this process with one torch / BLAS thread, best of
``--repeats``, interleaved so that machine noise hits every call alike):

- ``plain``: ``class_activation_maps(model, x, coefficients=W)`` (no covariance: maps only,
  upsampled to the input), every class; the baseline;
- ``SE+z``: the same with ``(W, covs)`` and ``simultaneous=False``;
- ``default``: ``(W, covs)`` with the defaults: SE, z, pointwise and simultaneous masks,
  ``band="cells"``, ``n_sim=2000`` (goal: <= 3x plain);
- ``pixels``: the same with ``band="pixels"`` (the exact simultaneous band over the upsampled
  pixels) for reference;
- ``torchcam``: torchcam's ``CAM`` on the same model and input: one forward pass under
  ``inference_mode`` and one extractor call per class (its maps stay at the 7 x 7 cells;
  torchcam does not upsample).

Ratios are printed against ``plain`` and against ``torchcam`` (all classes), and for one class
(``classes=0``, default call against the plain CAM and torchcam's CAM of one class). The last
columns are the mean ratio of the two simultaneous bands' half-widths ``t * band_se`` (cells /
pixels) over all pixels, images and classes, and ``sim floor``: the CPU time of the bare float32
products and cell reductions that any exact simulation with ``n_sim`` draws per image and class
needs (:func:`sim_floor`, not a public call) against the plain call. Where it is near or above 2,
no implementation of the seeded brute-force threshold reaches ``default <= 3 x plain``.

Usage: ``python benchmarks/cam.py [--models mnist,resnet18] [--widths 32,128,512]
[--n-mnist 512] [--n-resnet 8] [--repeats 3] [--n-sim 2000]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torchcam.methods import CAM

import glminterp as gi
from glminterp.maps.cam import class_activation_maps

N_CLASSES = 10


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (one ``relu`` called twice)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """ResNet-18 layout (torchvision names) with a last stage ``p`` channels wide."""

    def __init__(self, p: int = 512, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, p), 64
        for i, planes in enumerate(widths, 1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(inplanes, planes, stride),
                                                     BasicBlock(planes, planes)))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(p, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def setup(model_name: str, p: int, n: int):
    """Model, inputs, head weights, covariances, head and the torchcam target layer."""
    torch.manual_seed(0)
    if model_name == "mnist":
        model, x, target = gi.GapCNN(widths=(16, 32, p)).eval(), torch.rand(n, 1, 28, 28), "relu3"
    else:
        model, x, target = ResNet18(p).eval(), torch.rand(n, 3, 224, 224), "layer4"
    rng = np.random.default_rng(0)
    coefs = rng.normal(size=(p + 1, N_CLASSES))
    root = rng.normal(size=(N_CLASSES, p + 1, p + 1)) / np.sqrt(p)
    covs = root @ root.transpose(0, 2, 1) * 0.01
    return model, x, coefs, covs, gi.detect_head(model, x[:2]), target


def torchcam_cams(model, x, target: str, classes) -> list:
    with CAM(model, target, "fc") as ex:
        with torch.inference_mode():
            model(x)
        return [ex(class_idx=c)[0] for c in classes]


def timed(fns: dict, repeats: int) -> tuple[dict[str, float], dict]:
    """Best CPU time of each callable, interleaved, and each one's last result."""
    times, last = {k: [] for k in fns}, {}
    for _ in range(repeats):
        for key, fn in fns.items():
            t = time.process_time()
            last[key] = fn()
            times[key].append(time.process_time() - t)
    return {k: min(v) for k, v in times.items()}, last


def sim_floor(n_maps: int, cells: int, k: int, n_sim: int) -> float:
    """CPU time of the bare products of an exact cell-band simulation (a floor, not a call).

    Every map's threshold needs ``max_c |zeta_c|`` for each of the ``n_sim`` draws: one float32
    product ``(cells, k) @ (k, n_sim)`` (``k = min(p + 1, cells)``, the rank of the cell field)
    and the max and min over the cells, per image and class. No brute-force simulation with
    these draws does less arithmetic; the default call's threshold is at most this fast.
    """
    z, g = torch.randn(cells, k), torch.randn(k, n_sim)
    buf = torch.empty(cells, n_sim)
    f = buf.numpy()
    t = time.process_time()
    for _ in range(n_maps):
        torch.matmul(z, g, out=buf)
        np.maximum.reduce(f, axis=0)
        np.minimum.reduce(f, axis=0)
    return time.process_time() - t


def width_ratio(cells, pixels) -> float:
    """Mean ratio of the half-widths ``t * band_se`` of the two simultaneous bands."""
    def half(r):
        return np.asarray(r.sim_threshold)[:, :, None, None] * np.asarray(r.band_se)
    return float(np.mean(half(cells) / half(pixels)))


def measure(model_name: str, p: int, n: int, repeats: int, n_sim: int) -> dict[str, float]:
    model, x, coefs, covs, head, target = setup(model_name, p, n)
    kw = dict(head=head, batch_size=n)
    cov = (coefs, covs)
    fns = {
        "plain": lambda: class_activation_maps(model, x, coefficients=coefs, **kw),
        "se_z": lambda: class_activation_maps(model, x, coefficients=cov, simultaneous=False,
                                              **kw),
        "default": lambda: class_activation_maps(model, x, coefficients=cov, n_sim=n_sim, **kw),
        "pixels": lambda: class_activation_maps(model, x, coefficients=cov, n_sim=n_sim,
                                                band="pixels", **kw),
        "torchcam": lambda: torchcam_cams(model, x, target, range(N_CLASSES)),
        "plain1": lambda: class_activation_maps(model, x, 0, coefficients=coefs, **kw),
        "default1": lambda: class_activation_maps(model, x, 0, coefficients=cov, n_sim=n_sim,
                                                  **kw),
        "torchcam1": lambda: torchcam_cams(model, x, target, [0]),
    }
    times, last = timed(fns, repeats)
    times["width"] = width_ratio(last["default"], last["pixels"])
    cells = int(np.prod(last["plain"].activations.shape[2:]))
    times["floor"] = min(sim_floor(n * N_CLASSES, cells, min(p + 1, cells), n_sim)
                         for _ in range(2))
    return times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist,resnet18")
    ap.add_argument("--widths", default="32,128,512", help="channels of the last conv (p)")
    ap.add_argument("--n-mnist", type=int, default=512)
    ap.add_argument("--n-resnet", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-sim", type=int, default=2000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"CPU time, 1 thread, best of {args.repeats} interleaved; {N_CLASSES} classes, "
          f"n_sim={args.n_sim}; ratios against the plain CAM call and torchcam's CAM "
          "(same model, same input)")
    head = (f"{'model':<9} {'p':>4} {'N':>4} {'plain s':>8} {'default s':>9} "
            f"{'default/plain':>13} {'SE+z/plain':>10} {'pixels/plain':>12} "
            f"{'torchcam s':>10} {'plain/torchcam':>14} {'default/torchcam':>16} "
            f"{'1 class: /plain':>15} "
            f"{'/torchcam':>9} {'width cells/pixels':>18} {'sim floor/plain':>15}")
    print(head)
    with threadpool_limits(1):
        for model_name in args.models.split(","):
            n = args.n_mnist if model_name == "mnist" else args.n_resnet
            for p in (int(w) for w in args.widths.split(",")):
                t = measure(model_name, p, n, args.repeats, args.n_sim)
                print(f"{model_name:<9} {p:>4} {n:>4} {t['plain']:8.3f} {t['default']:9.3f} "
                      f"{t['default'] / t['plain']:13.2f} {t['se_z'] / t['plain']:10.2f} "
                      f"{t['pixels'] / t['plain']:12.2f} {t['torchcam']:10.3f} "
                      f"{t['plain'] / t['torchcam']:14.2f} "
                      f"{t['default'] / t['torchcam']:16.2f} "
                      f"{t['default1'] / t['plain1']:15.2f} "
                      f"{t['default1'] / t['torchcam1']:9.2f} {t['width']:18.3f} "
                      f"{t['floor'] / t['plain']:15.2f}", flush=True)


if __name__ == "__main__":
    main()
