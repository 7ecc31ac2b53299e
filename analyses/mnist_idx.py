"""Study ``mnist_idx``: The ``mnist_gap_cnn`` study on full MNIST read from your IDX files.

Run from the repository root (the same as ``glminterp run mnist_idx``)::

    python analyses/mnist_idx.py --idx-path IDX_FOLDER [--out reports] [--seed 0] [--epochs N] [--size N]

Writes everything under ``<out>/mnist_idx/`` (report.html, coefficients.csv, fit.json, ...);
``--help`` lists every option.
"""

import sys

from glminterp.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "mnist_idx", *sys.argv[1:]]))
