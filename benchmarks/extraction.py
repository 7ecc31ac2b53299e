"""Extraction throughput as a ratio to the bare forward pass (goal: >= 0.95).

Both sides run the same model on the same batches under ``torch.inference_mode()``; the
baseline only calls ``model(x)``. The extraction side is the public call a user makes,
``extract_activations(model, data, ...)`` with every check it runs (inputs and activations
finite, labels, ids, the head traced) and returning what the user gets: an ``Activations``
whose DataFrames are built on first access. The ``+frames`` columns time the same call plus
the first access of ``features`` and ``obs`` (what a user who goes on to pandas pays).

For the MLP the run also times, alone, two parts of the work that a bare forward pass does
not do, as fractions of the bare pass: a direct finiteness pass over the inputs (``sum`` per
batch: what the input check would cost if it read the inputs again; for a model whose first
layer is a plain ``nn.Linear`` reading the batch, extraction checks that layer's output
instead, see ``glminterp/_input_check.py``) and head detection (one traced forward pass on two
rows, a fixed cost per call).

Best of ``--repeats`` runs each, interleaved so machine noise hits both; wall-clock and
process CPU time are both reported (on a shared machine the CPU-time ratio is the stable one:
single-threaded work, other processes' load excluded).

Usage: ``python benchmarks/extraction.py [--n 5000] [--big 60000] [--batch-size 256]
[--repeats 7] [--models mlp gap_cnn]``
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import glminterp as gi
from glminterp.head import detect_head


def bare(model, x, batch_size):
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            model(x[s : s + batch_size])


def input_pass(x, batch_size):
    """What the input check reads: one sum per batch (a finite sum: every value finite)."""
    for s in range(0, x.shape[0], batch_size):
        math.isfinite(x[s : s + batch_size].sum().item())


def best(fn, repeats, clocks):
    """Best wall and CPU seconds of ``fn`` (``clocks`` collects them across calls)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    clocks[0], clocks[1] = min(clocks[0], wall), min(clocks[1], cpu)


def run_row(name, model, x, data, layers, keep, args):
    model.eval()
    b, e, f = [math.inf] * 2, [math.inf] * 2, [math.inf] * 2
    kw = {"batch_size": args.batch_size, "keep_maps": keep, "progress": False}

    def extract():
        return gi.extract_activations(model, data, layers, **kw)

    def extract_frames():
        acts = extract()
        acts.features, acts.obs  # noqa: B018 - the first access builds the frames

    for _ in range(args.repeats):
        best(lambda: bare(model, x, args.batch_size), args.repeats, b)
        best(extract, args.repeats, e)
        best(extract_frames, args.repeats, f)
    what = ("head input" if layers is None else "+".join(layers)) + (" +maps" if keep else "")
    print(f"{name:<8} {x.shape[0]:>6} {what:<20} {b[0]:8.4f} {e[0]:9.4f} {b[0] / e[0]:6.3f} "
          f"{b[1] / e[1]:6.3f} {f[0]:9.4f} {b[0] / f[0]:6.3f} {b[1] / f[1]:6.3f}", flush=True)
    return b


def floor_parts(model, x, args, bare_cpu):
    """CPU time of the input pass and of head detection alone, as fractions of the bare pass."""
    p, d = [math.inf] * 2, [math.inf] * 2
    for _ in range(args.repeats):
        best(lambda: input_pass(x, args.batch_size), args.repeats, p)
        best(lambda: detect_head(model, x[:2], input_hook=True), args.repeats, d)
    print(f"{'':<8} {x.shape[0]:>6} parts alone (cpu): a direct input finiteness pass "
          f"{p[1] / bare_cpu:.3f} of the bare pass, head detection {d[1] / bare_cpu:.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--big", type=int, default=60000, help="synthetic rows for the MLP")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", nargs="*", default=["mlp", "gap_cnn"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = gi.load_mnist5k().subset(range(args.n))
    print(f"{args.n} MNIST images (and {args.big} synthetic 28x28 rows for the MLP), batch "
          f"{args.batch_size}, 1 thread, best of {args.repeats}; ratio = bare / extract")
    print(f"{'model':<8} {'rows':>6} {'what':<20} {'bare s':>8} {'extract s':>9} {'ratio':>6} "
          f"{'cpu':>6} {'+frames s':>9} {'ratio':>6} {'cpu':>6}")
    if "mlp" in args.models:
        mlp = gi.build_model("mlp", seed=0)
        b = run_row("mlp", mlp, ds.images, ds, None, False, args)
        floor_parts(mlp, ds.images, args, b[1])
        gen = torch.Generator().manual_seed(0)
        xb = torch.rand((args.big, 1, 28, 28), generator=gen)
        yb = torch.randint(0, 10, (args.big,), generator=gen)
        b = run_row("mlp", mlp, xb, (xb, yb), None, False, args)
        floor_parts(mlp, xb, args, b[1])
    if "gap_cnn" in args.models:
        for layers, keep in [(None, False), (None, True), (["relu1", "relu2", "relu3"], False)]:
            run_row("gap_cnn", gi.build_model("gap_cnn", seed=0), ds.images, ds, layers, keep,
                    args)


if __name__ == "__main__":
    main()
