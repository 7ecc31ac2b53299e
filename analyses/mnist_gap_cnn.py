"""Study `mnist_gap_cnn`: GAP CNN on MNIST 5k: multinomial refit of the head and CAMs with uncertainty.

Run from the repository root::

    python analyses/mnist_gap_cnn.py [--out reports] [--seed 0] [--epochs N] [--size N]

Writes everything under ``<out>/mnist_gap_cnn/`` (report.html, coefficients.csv, fit.json, ...).
"""

from __future__ import annotations

import argparse
import sys

from glminterp.studies import default_config, mnist_gap_cnn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="reports", help="parent folder of the report")
    p.add_argument("--seed", type=int, default=0, help="seed of split, initialisation, shuffling")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the study's)")
    p.add_argument("--size", type=int, default=None, help="rows drawn before splitting (default: the study's)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    config = default_config("mnist_gap_cnn")
    changes = {k: v for k, v in (("epochs", args.epochs), ("size", args.size)) if v is not None}
    res = mnist_gap_cnn(args.out, config=config.replace(**changes), seed=args.seed,
             progress=not args.quiet, command_line=[sys.argv[0], *(argv or sys.argv[1:])])
    print("\n".join(res.summary_lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
