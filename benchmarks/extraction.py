"""Extraction throughput as a ratio to the bare forward pass (goal: >= 0.95).

Both sides run the same model on the same batches under ``torch.inference_mode()``; the
baseline only calls ``model(x)``, extraction also records, pools and copies the head's input
layer (and, in the second row, keeps the full conv maps), builds the DataFrames and runs head
detection. Best of ``--repeats`` runs each, interleaved so machine noise hits both; wall-clock
and process CPU time are both reported (on a shared machine the CPU-time ratio is the stable
one: single-threaded work, other processes' load excluded).

Usage: ``python benchmarks/extraction.py [--n 5000] [--batch-size 256] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import time

import torch

import glminterp as gi


def bare(model, x, batch_size):
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            model(x[s : s + batch_size])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = gi.load_mnist5k().subset(range(args.n))
    print(f"{args.n} MNIST images, batch {args.batch_size}, 1 thread, best of {args.repeats}")
    print(f"{'model':<10} {'what':<22} {'bare s':>8} {'extract s':>10} {'ratio':>6} {'cpu ratio':>9}")
    for name, model, layers, keep in [
        ("gap_cnn", gi.build_model("gap_cnn", seed=0), None, False),
        ("gap_cnn", gi.build_model("gap_cnn", seed=0), None, True),
        ("gap_cnn", gi.build_model("gap_cnn", seed=0), ["relu1", "relu2", "relu3"], False),
        ("mlp", gi.build_model("mlp", seed=0), None, False),
    ]:
        model.eval()
        tb = te = cb = ce = float("inf")
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            bare(model, ds.images, args.batch_size)
            tb, cb = min(tb, time.perf_counter() - t), min(cb, time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            gi.extract_activations(
                model, ds, layers, batch_size=args.batch_size, keep_maps=keep, progress=False
            )
            te, ce = min(te, time.perf_counter() - t), min(ce, time.process_time() - c)
        what = ("head input" if layers is None else "+".join(layers)) + (" +maps" if keep else "")
        print(f"{name:<10} {what:<22} {tb:8.3f} {te:10.3f} {tb / te:6.3f} {cb / ce:9.3f}")


if __name__ == "__main__":
    main()
