"""The built-in studies: short scripts in ``analyses/`` that use the public analysis API.

Each study is the file ``analyses/<name>.py`` of the source tree: a ``DEFAULTS``
:class:`StudyConfig` and a ``run(out, *, config, seed, ...)`` function written with
:class:`glminterp.Analysis` only, so a user copies one and edits it. This module finds them by
name for ``glminterp run <study>``; it has no analysis code of its own.

``mnist_gap_cnn`` (the default)
    A GAP CNN (64 channels into the head, BatchNorm, trained with shifted copies of the
    images to test accuracy about 0.98) on MNIST 5k; the multinomial refit of its head on the
    held-out refit split (the estimator the data need: a remedy when the rows are separated);
    CAMs from the network's weights and from the coefficients, with SE and z maps.
``mnist_mlp``
    ``784 -> H (sigmoid) -> 10``; the refit; receptive fields of the top units.
``mnist_zero_one``
    ``784 -> 1 -> 2`` on the digits 0 and 1.
``mnist_idx``
    As ``mnist_gap_cnn`` on full MNIST read from the user's IDX files.

Every step is seeded (split, initialisation, shuffling); running a study twice writes
byte-identical ``coefficients.csv`` and ``fit.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from glminterp.analysis import Analysis, Plan
from glminterp.data import DEFAULT_FRACTIONS, load_mnist5k
from glminterp.train import train_model

STUDIES: tuple[str, ...] = ("mnist_gap_cnn", "mnist_mlp", "mnist_zero_one", "mnist_idx")
DEFAULT_STUDY = "mnist_gap_cnn"
ANALYSES = Path(__file__).resolve().parents[2] / "analyses"

#: What ``glminterp run`` returns: the study's :class:`~glminterp.Analysis`.
StudyResult = Analysis
#: The MNIST 5k studies' data, looked up when a study runs (a test can swap in smaller data).
_mnist5k = load_mnist5k
_MNIST5K_STUDIES = ("mnist_gap_cnn", "mnist_mlp", "mnist_zero_one")


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study run (each study script states its ``DEFAULTS``).

    Attributes
    ----------
    size : int or None
        Rows drawn (stratified, seeded) from the data set before splitting; None uses all.
    epochs, batch_size, lr, weight_decay
        Training (deterministic CPU; see :func:`glminterp.train_model`).
    optimizer, schedule, label_smoothing, augment, max_shift
        More of :func:`glminterp.train_model`'s settings: ``"adam"`` or ``"adamw"``; the
        learning-rate schedule (None, ``"onecycle"``, ``"cosine"``); label smoothing of the
        cross-entropy; seeded augmentation of the training batches (None, ``"shift"``,
        ``"affine"``) within ``max_shift`` pixels.
    hidden : int
        Hidden units of the MLP studies.
    widths : tuple of int
        Channels of the GAP CNN's three conv layers; ``widths[2]`` units enter the GLM.
    batchnorm, dropout
        GAP CNN options (:class:`glminterp.GapCNN`): BatchNorm before each ReLU, dropout
        before the head.
    mlp_output : {"softmax", "sigmoid"}
    fractions : mapping
        Train/refit/test fractions of the split.
    parametrization, alpha, n_images, top_units, save_activations, remedy, engine
        The analysis plan (:class:`glminterp.Plan`; ``n_images`` is ``Plan.images``).
    """

    size: int | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str | None = None
    label_smoothing: float = 0.0
    augment: str | None = None
    max_shift: int = 2
    hidden: int = 12
    widths: tuple[int, int, int] = (16, 32, 16)
    batchnorm: bool = False
    dropout: float = 0.0
    mlp_output: str = "softmax"
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    parametrization: str = "reference"
    alpha: float = 0.05
    n_images: int = 4
    top_units: int = 3
    save_activations: bool = True
    remedy: str | None = "auto"
    engine: str = "auto"

    def replace(self, **changes) -> StudyConfig:
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def plan(self, **changes) -> Plan:
        """The analysis plan these settings describe."""
        return Plan(images=self.n_images, alpha=self.alpha, parametrization=self.parametrization,
                    remedy=self.remedy, engine=self.engine, top_units=self.top_units,
                    save_activations=self.save_activations, **changes)

    def train(self, analysis: Analysis) -> Analysis:
        """Train the analysis's model with these settings (:func:`glminterp.train_model`)."""
        options = {"optimizer": self.optimizer, "schedule": self.schedule,
                   "label_smoothing": self.label_smoothing, "augment": self.augment,
                   "max_shift": self.max_shift}
        # looked up at call time, so a test can swap in another trainer
        trainer = functools.partial(train_model, **options)
        return analysis.train(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                              weight_decay=self.weight_decay, trainer=trainer)


def _check_study(study: str) -> None:
    if study not in STUDIES:
        raise ValueError(f"study={study!r} is not known; use one of {STUDIES}.")


def load_study(name: str) -> ModuleType:
    """The study script ``analyses/<name>.py`` as a module."""
    _check_study(name)
    path = ANALYSES / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the study scripts ship with the source tree "
                                "(analyses/); run from a checkout of the repository.")
    spec = importlib.util.spec_from_file_location(f"glminterp_study_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_config(study: str) -> StudyConfig:
    """The default settings of ``study`` (its script's ``DEFAULTS``)."""
    return load_study(study).DEFAULTS


def run_study(name: str = DEFAULT_STUDY, out: str | Path = "reports", *, seed: int = 0,
              config: StudyConfig | None = None, progress: bool = True,
              idx_path: str | Path | None = None, command_line: list[str] | None = None,
              **overrides) -> Analysis:
    """Run a study by name; ``overrides`` change fields of its default config (e.g. ``epochs``).

    Raises
    ------
    ValueError
        For an unknown study, or ``mnist_idx`` without ``idx_path``.
    """
    _check_study(name)
    if name == "mnist_idx" and idx_path is None:
        raise ValueError("study 'mnist_idx' needs idx_path=<folder with the MNIST IDX files> "
                         "(--idx-path on the command line).")
    from glminterp.outputs import check_output_folder

    check_output_folder(Path(out) / name)  # refuse before training, not after
    module = load_study(name)
    config = (config or module.DEFAULTS).replace(**overrides)
    kw = {"idx_path": idx_path} if name == "mnist_idx" else {}
    if name in _MNIST5K_STUDIES:
        kw["data"] = _mnist5k()
    return module.run(out, config=config, seed=seed, progress=progress,
                      command_line=command_line, **kw)


def study_main(name: str, argv: list[str] | None = None) -> int:
    """``python analyses/<name>.py [options]``: the same as ``glminterp run <name> [options]``."""
    import sys

    from glminterp.cli import main

    return main(["run", name, *(sys.argv[1:] if argv is None else argv)])
