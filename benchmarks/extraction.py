"""Extraction throughput as a ratio to the bare forward pass (goal: >= 0.95).

The baseline: the same model, in eval mode, float32, one thread, on the same rows in the same
batches (``x[s : s + batch_size]`` of the same in-memory tensor) under the same
``torch.inference_mode()``, calling only ``model(x)`` and keeping nothing. The extraction side
is the public call a user makes, ``extract_activations(model, data, ...)`` with every check it
runs (inputs and activations finite, named by sample id and unit; labels; ids; a module that
runs twice refused; the model left exactly as found) and returning what the user gets: an
``Activations`` whose DataFrames are built on first access. The ``+frames`` columns time the
same call plus the first access of ``features`` and ``obs`` (what a user who goes on to pandas
pays). Ratio = bare / extract: 1 means extraction costs nothing on top of the forward pass.
``faults``: the fewest and most page faults of one extraction call (the bare pass has none):
fresh memory for the result costs a fault per 4 KB page at first touch, unless the allocator
hands back memory a previous call freed, so the ratios move with it.

For the MLP (the model where the extra cost shows: its forward pass is ~2 us a row) the run
then accounts for the extra CPU time, each part timed alone on the same batches and given as a
fraction of the bare pass:

- ``taps``: no-op taps on the head's and the first Linear's ``forward``
  (:class:`glminterp.hooks.ForwardTap`, what extraction records through instead of hooks);
- ``copies``: the head's input and the logits copied into preallocated float32 ``(N, p)`` and
  ``(N, K)`` buffers (fresh memory each call, as extraction's result must be: the first touch
  of each page is a page fault, counted in the ``faults`` column);
- ``checks``: the two per-batch finiteness sums (the first Linear's output, which vouches for
  the inputs, see ``glminterp/_input_check.py``; the head's ``(batch, K)`` output, which
  vouches for its input, see ``glminterp/_head_tap.py``);
- ``head detection``: one traced forward pass on two rows (a fixed cost per call);
- ``rest``: what is left of extract - bare (Python bookkeeping per batch and the fixed set-up:
  argument checks, the model guard, the layer plan, labels, ids, metadata).

Best of ``--repeats`` runs each, interleaved so machine noise hits both sides; wall-clock and
process CPU time are both reported (on a shared machine the CPU-time ratio is the stable one:
single-threaded work, other processes' load excluded).

Usage: ``python benchmarks/extraction.py [--n 5000] [--big 60000] [--batch-size 256]
[--repeats 7] [--big-repeats 3] [--models mlp gap_cnn] [--no-big-gap]``
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import numpy as np
import torch

import glminterp as gi
from glminterp.head import detect_head
from glminterp.hooks import ForwardTap


def bare(model, x, batch_size):
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            model(x[s : s + batch_size])


def best(fn, clocks):
    """Best wall and CPU seconds of ``fn`` (``clocks`` collects them across calls; a third
    entry, when there is one, collects the page faults of each call)."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    clocks[0], clocks[1] = min(clocks[0], wall), min(clocks[1], cpu)
    if len(clocks) > 2:
        clocks[2].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)


def run_row(name, model, x, data, layers, keep, args, repeats):
    model.eval()
    b, e, f = [math.inf] * 2, [math.inf, math.inf, []], [math.inf] * 2
    kw = {"batch_size": args.batch_size, "keep_maps": keep, "progress": False}

    def extract():
        return gi.extract_activations(model, data, layers, **kw)

    def extract_frames():
        acts = extract()
        acts.features, acts.obs  # noqa: B018 - the first access builds the frames

    for _ in range(repeats):
        best(lambda: bare(model, x, args.batch_size), b)
        best(extract, e)
        best(extract_frames, f)
    what = ("head input" if layers is None else "+".join(layers)) + (" +maps" if keep else "")
    print(f"{name:<8} {x.shape[0]:>6} {what:<20} {b[0]:8.4f} {e[0]:9.4f} {b[0] / e[0]:6.3f} "
          f"{b[1] / e[1]:6.3f} {f[0]:9.4f} {b[0] / f[0]:6.3f} {b[1] / f[1]:6.3f} "
          f"{min(e[2]):>6}-{max(e[2])}", flush=True)
    return b, e


def _piece_loop(model, head, first, x, batch_size, level):
    """The bare pass plus extraction's per-batch pieces up to ``level`` (1 taps, 2 + copies,
    3 + checks), on the same batches."""
    n = x.shape[0]
    rows = {"buf": None, "logits": torch.empty((n, head.out_features)).numpy(), "pos": 0}

    def head_tap(forward):
        def tapped(h):
            if level >= 2:
                if rows["buf"] is None:
                    rows["buf"] = torch.empty((n, h.shape[1])).numpy()
                p = rows["pos"]
                np.copyto(rows["buf"][p : p + h.shape[0]], h.numpy())
            out = forward(h)
            if level >= 3:
                math.isfinite(out.sum().item())
            return out

        return tapped

    def first_tap(forward):
        def tapped(z):
            out = forward(z)
            if level >= 3:
                math.isfinite(out.sum().item())
            return out

        return tapped

    handles = [ForwardTap(head, head_tap), ForwardTap(first, first_tap)]
    try:
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                rows["pos"] = s
                out = model(x[s : s + batch_size])
                if level >= 2:
                    np.copyto(rows["logits"][s : s + out.shape[0]], out.numpy())
    finally:
        for h in handles:
            h.remove()


def account(model, x, args, bare_cpu, extract_cpu):
    """CPU time of extraction's parts alone, as fractions of the bare pass (see the module
    docstring); ``rest`` is what they leave of extract - bare."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    first, head = linears[0], linears[-1]
    levels = [[math.inf] * 2 for _ in range(3)]
    d = [math.inf] * 2
    b = [math.inf] * 2
    for _ in range(args.repeats):
        best(lambda: bare(model, x, args.batch_size), b)
        for lv in range(3):
            best(lambda lv=lv: _piece_loop(model, head, first, x, args.batch_size, lv + 1),
                 levels[lv])
        best(lambda: detect_head(model, x[:2], input_hook=True), d)
    base = b[1]
    taps, copies, checks = (levels[0][1] - base, levels[1][1] - levels[0][1],
                            levels[2][1] - levels[1][1])
    det = d[1]
    rest = (extract_cpu - bare_cpu) / bare_cpu - (levels[2][1] - base) / base - det / base
    print(f"{'':<8} {x.shape[0]:>6} extra cpu / bare: taps {taps / base:.3f}, copies "
          f"{copies / base:.3f}, checks {checks / base:.3f}, head detection {det / base:.3f}, "
          f"rest {rest:.3f} (total {(extract_cpu - bare_cpu) / bare_cpu:.3f})", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--big", type=int, default=60000, help="synthetic rows for the big runs")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--big-repeats", type=int, default=3, help="repeats of the big GAP CNN run")
    ap.add_argument("--models", nargs="*", default=["mlp", "gap_cnn"])
    ap.add_argument("--no-big-gap", action="store_true", help="skip the GAP CNN on --big rows")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = gi.load_mnist5k().subset(range(args.n))
    gen = torch.Generator().manual_seed(0)
    xb = torch.rand((args.big, 1, 28, 28), generator=gen)
    yb = torch.randint(0, 10, (args.big,), generator=gen)
    print(f"{args.n} MNIST images and {args.big} synthetic 28x28 rows, batch "
          f"{args.batch_size}, 1 thread, best of {args.repeats} ({args.big_repeats} for the "
          "big GAP CNN); ratio = bare / extract")
    print(f"{'model':<8} {'rows':>6} {'what':<20} {'bare s':>8} {'extract s':>9} {'ratio':>6} "
          f"{'cpu':>6} {'+frames s':>9} {'ratio':>6} {'cpu':>6} {'faults':>6}")
    if "mlp" in args.models:
        mlp = gi.build_model("mlp", seed=0)
        for x, data in [(ds.images, ds), (xb, (xb, yb))]:
            b, e = run_row("mlp", mlp, x, data, None, False, args, args.repeats)
            account(mlp, x, args, b[1], e[1])
    if "gap_cnn" in args.models:
        for layers, keep in [(None, False), (None, True), (["relu1", "relu2", "relu3"], False)]:
            run_row("gap_cnn", gi.build_model("gap_cnn", seed=0), ds.images, ds, layers, keep,
                    args, args.repeats)
        if not args.no_big_gap:
            run_row("gap_cnn", gi.build_model("gap_cnn", seed=0), xb, (xb, yb), None, True,
                    args, args.big_repeats)


if __name__ == "__main__":
    main()
