"""Study ``mnist_gap_cnn`` (the default): a GAP CNN on MNIST 5k, its head refitted as a
multinomial GLM on held-out rows, and CAMs with standard errors.

Written with the public analysis API only: copy this file and edit it (your model, your data,
your plan). Run it from the repository root (the same as ``glminterp run mnist_gap_cnn``)::

    python analyses/mnist_gap_cnn.py [--out reports] [--seed 0] [--epochs N] [--size N]

Writes ``<out>/mnist_gap_cnn/`` (report.html, coefficients.csv, fit.json, ...).
"""

from pathlib import Path

import glminterp as gi
from glminterp.report.studies import StudyConfig, study_main

NAME = "mnist_gap_cnn"
# 64 channels feed the head. With 2,500 training images, what makes the network accurate
# (test accuracy about 0.98, seed 0) is BatchNorm before each ReLU and training on copies of
# the images shifted by up to 2 pixels (seeded), with AdamW on a one-cycle learning rate. An
# accurate network's features separate the classes on fresh rows too, so the report shows
# which estimator that calls for, and why.
DEFAULTS = StudyConfig(epochs=20, batch_size=64, lr=5e-3, weight_decay=1e-4, optimizer="adamw",
                       schedule="onecycle", augment="shift", max_shift=2, widths=(32, 64, 64),
                       batchnorm=True)


def run(out="reports", *, config=DEFAULTS, seed=0, progress=True, command_line=None,
        data=None, name=NAME):
    data = gi.load_mnist5k() if data is None else data
    kwargs = {"in_channels": int(data.images.shape[1]), "n_classes": data.n_classes,
              "widths": tuple(config.widths), "batchnorm": config.batchnorm,
              "dropout": config.dropout}
    model = gi.build_model("gap_cnn", seed=seed, **kwargs)
    analysis = gi.Analysis(
        model, data, size=config.size, splits=dict(config.fractions), seed=seed, name=name,
        plan=config.plan(), architecture="gap_cnn", model_kwargs=kwargs, progress=progress,
        title=f"GAP CNN on {data.name}: GLM refit and CAMs",
        description=f"A CNN with global average pooling -> Linear, trained here on {data.name}; "
        "its head is refitted as a multinomial GLM on held-out rows, and its class activation "
        "maps are computed from the network's weights and from the GLM coefficients, with "
        "standard errors, z maps and significance masks.",
    )
    config.train(analysis)  # the study trains its own network; your analysis need not
    analysis.run().write_report(Path(out) / name, command_line=command_line)
    return analysis


if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
