"""Study ``mnist_zero_one``: The ``784 -> 1 -> 2`` network on the MNIST 5k digits 0 and 1: a one-regressor GLM.

Run from the repository root (the same as ``glminterp run mnist_zero_one``)::

    python analyses/mnist_zero_one.py [--out reports] [--seed 0] [--epochs N] [--size N]

Writes everything under ``<out>/mnist_zero_one/`` (report.html, coefficients.csv, fit.json, ...);
``--help`` lists every option.
"""

import sys

from glminterp.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "mnist_zero_one", *sys.argv[1:]]))
