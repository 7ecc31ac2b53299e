"""Study ``mnist_idx``: the ``mnist_gap_cnn`` study on full MNIST read from your IDX files.

Written with the public analysis API only. Run it from the repository root (the same as
``glminterp run mnist_idx``)::

    python analyses/mnist_idx.py --idx-path IDX_FOLDER [--out reports] [--seed 0] [--size N]

``IDX_FOLDER`` holds ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``; the
train file is split into train/refit/test. By default 20,000 rows are drawn (stratified) so the
study runs in minutes; ``--size 60000`` uses all. Writes ``<out>/mnist_idx/``.
"""

import glminterp as gi
from glminterp.report.studies import load_study, study_main

NAME = "mnist_idx"
# the mnist_gap_cnn network and training recipe, fewer epochs on the larger train split
DEFAULTS = load_study("mnist_gap_cnn").DEFAULTS.replace(size=20000, epochs=8)


def run(out="reports", *, idx_path, config=DEFAULTS, seed=0, progress=True, command_line=None):
    data = gi.load_mnist_idx(idx_path, "train")
    return load_study("mnist_gap_cnn").run(out, config=config, seed=seed, progress=progress,
                                           command_line=command_line, data=data, name=NAME)


if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
