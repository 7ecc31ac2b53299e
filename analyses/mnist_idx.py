"""Study `mnist_idx`: The ``mnist_gap_cnn`` study on full MNIST read from IDX files in ``path``.

Run from the repository root::

    python analyses/mnist_idx.py IDX_FOLDER [--out reports] [--seed 0] [--epochs N] [--size N]

Writes everything under ``<out>/mnist_idx/`` (report.html, coefficients.csv, fit.json, ...).
"""

from __future__ import annotations

import argparse
import sys

from glminterp.studies import default_config, mnist_idx


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("idx_path", help="folder with train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    p.add_argument("--out", default="reports", help="parent folder of the report")
    p.add_argument("--seed", type=int, default=0, help="seed of split, initialisation, shuffling")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the study's)")
    p.add_argument("--size", type=int, default=None, help="rows drawn before splitting (default: the study's)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    config = default_config("mnist_idx")
    changes = {k: v for k, v in (("epochs", args.epochs), ("size", args.size)) if v is not None}
    res = mnist_idx(args.idx_path, args.out, config=config.replace(**changes), seed=args.seed,
             progress=not args.quiet, command_line=[sys.argv[0], *(argv or sys.argv[1:])])
    print("\n".join(res.summary_lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
