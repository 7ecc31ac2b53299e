"""Study ``mnist_zero_one``: the ``784 -> 1 -> 2`` network on the MNIST 5k digits 0 and 1, a
one-regressor GLM.

The single unit almost surely separates the classes on the refit rows, so the MLE does not
exist: the analysis then refits with Firth's penalized likelihood and the report says so (a
finding, not a failure). Written with the public analysis API only. Run it from the repository
root (the same as ``glminterp run mnist_zero_one``)::

    python analyses/mnist_zero_one.py [--out reports] [--seed 0] [--epochs N] [--size N]

Writes ``<out>/mnist_zero_one/``.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

import glminterp as gi
from glminterp.report.studies import StudyConfig, study_main

NAME = "mnist_zero_one"
DEFAULTS = StudyConfig(epochs=5, lr=1e-3, batch_size=64)


def zero_one_data(data):
    """The rows of digits 0 and 1 (labels stay 0/1, classes ``("0", "1")``)."""
    sub = data.subset(((data.labels == 0) | (data.labels == 1)).numpy())
    return replace(sub, classes=("0", "1"), name=f"{data.name} (0 vs 1)")


def run(out="reports", *, config=DEFAULTS, seed=0, progress=True, command_line=None, data=None):
    data = zero_one_data(gi.load_mnist5k() if data is None else data)
    n_in = int(np.prod(data.images.shape[1:]))
    model = gi.build_model("zero_one", seed=seed, n_inputs=n_in)
    analysis = gi.Analysis(
        model, data, size=config.size, splits=dict(config.fractions), seed=seed, name=NAME,
        plan=config.plan(), architecture="zero_one", model_kwargs={"n_inputs": n_in},
        progress=progress, title=f"{n_in} -> 1 -> 2 network on {data.name}",
        description=f"The {n_in} -> 1 -> 2 network on {data.name}, trained here: its single "
        "hidden unit is the only regressor of the GLM refit.",
    )
    config.train(analysis)
    analysis.run().write_report(Path(out) / NAME, command_line=command_line)
    return analysis


if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
