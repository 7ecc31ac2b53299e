"""Study ``mnist_mlp``: ``784 -> H (sigmoid) -> 10`` MLP on MNIST 5k: refit of its head and receptive fields of top units.

Run from the repository root (the same as ``glminterp run mnist_mlp``)::

    python analyses/mnist_mlp.py [--out reports] [--seed 0] [--epochs N] [--size N]

Writes everything under ``<out>/mnist_mlp/`` (report.html, coefficients.csv, fit.json, ...);
``--help`` lists every option.
"""

import sys

from glminterp.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "mnist_mlp", *sys.argv[1:]]))
