"""Study ``mnist_gap_cnn``: GAP CNN on MNIST 5k: multinomial refit of the head and CAMs with uncertainty (the default study).

Run from the repository root (the same as ``glminterp run mnist_gap_cnn``)::

    python analyses/mnist_gap_cnn.py [--out reports] [--seed 0] [--epochs N] [--size N]

Writes everything under ``<out>/mnist_gap_cnn/`` (report.html, coefficients.csv, fit.json, ...);
``--help`` lists every option.
"""

import sys

from glminterp.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "mnist_gap_cnn", *sys.argv[1:]]))
