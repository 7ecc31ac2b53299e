"""Study ``mnist_mlp``: a ``784 -> H (sigmoid) -> 10`` MLP on MNIST 5k, the GLM refit of its head
and the receptive fields of the top units.

Written with the public analysis API only: copy this file and edit it. Run it from the
repository root (the same as ``glminterp run mnist_mlp``)::

    python analyses/mnist_mlp.py [--out reports] [--seed 0] [--epochs N] [--size N]

``H`` is 12 by default: about 12 events per parameter on the refit split of MNIST 5k.
Writes ``<out>/mnist_mlp/``.
"""

from pathlib import Path

import numpy as np

import glminterp as gi
from glminterp.report.studies import StudyConfig, study_main

NAME = "mnist_mlp"
DEFAULTS = StudyConfig(epochs=15, lr=3e-3, batch_size=64)


def run(out="reports", *, config=DEFAULTS, seed=0, progress=True, command_line=None, data=None):
    data = gi.load_mnist5k() if data is None else data
    n_in = int(np.prod(data.images.shape[1:]))
    kwargs = {"n_inputs": n_in, "n_hidden": int(config.hidden), "n_classes": data.n_classes,
              "output": config.mlp_output}
    model = gi.build_model("mlp", seed=seed, **kwargs)
    analysis = gi.Analysis(
        model, data, size=config.size, splits=dict(config.fractions), seed=seed, name=NAME,
        plan=config.plan(), architecture="mlp", model_kwargs=kwargs, progress=progress,
        title=f"MLP on {data.name}: GLM refit of the head",
        description=f"The seed question's network: {n_in} -> {config.hidden} (sigmoid) -> "
        f"{data.n_classes} ({config.mlp_output} output) trained here on {data.name}; the head "
        "is refitted as a GLM on held-out rows and the top units' receptive fields are shown.",
    )
    config.train(analysis)
    analysis.run().write_report(Path(out) / NAME, command_line=command_line)
    return analysis


if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
