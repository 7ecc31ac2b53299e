"""The analysis of one trained network: extract -> refit -> maps and visualizations -> report.

::

    import glminterp as gi

    analysis = gi.Analysis(model, "data/images", splits="refit",
                           plan=gi.Plan(images=4, sections=("cam", "patches")))
    analysis.run().write_report("reports/mine")

Each step is a method that can be called alone (:meth:`Analysis.extract`,
:meth:`Analysis.refit_head`, :meth:`Analysis.visualize`, :meth:`Analysis.write_report`);
:meth:`Analysis.run` calls the ones not yet done. Nothing is trained unless
:meth:`Analysis.train` is called. The refit uses the estimator the data need: the
maximum-likelihood GLM when it exists, otherwise a separation remedy, and
:attr:`Analysis.estimator` records which and why; when the MLE exists, the bias-reduced fit
of the same model is fitted beside it (:attr:`Analysis.bias_reduced`) for the report to show
next to it. The maps and visualizations are those that
apply to the architecture (:func:`applicable_steps`); the others are listed as not applicable,
with the reason, in the report.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from glminterp.data import LabeledImages, stratified_split
from glminterp.inputs import as_labeled_images, resolve_splits

#: Visualization steps, in report order.
STEPS: tuple[str, ...] = ("cam", "gradcam", "occlusion", "siddhartha", "patches", "deconvnet",
                          "receptive_fields", "olden_garson", "zero_one")
REMEDY_CHOICES: tuple[str | None, ...] = ("auto", None, "firth", "ridge", "pca")


@dataclass(frozen=True)
class Plan:
    """What an analysis computes and shows (a script states it; every field has a default).

    Attributes
    ----------
    sections : sequence of str, optional
        Visualization steps to run (names in :data:`STEPS`); default: every one that applies
        to the architecture. A named step that does not apply is reported as such.
    classes : sequence of str, optional
        Classes whose test images are shown in the per-image maps (default: all classes).
    images : int or sequence of str
        Number of images (one per class, in class order) or explicit sample ids.
    image_split : str, optional
        Split the images are drawn from: ``"test"`` when present, else ``"refit"``.
    alpha : float
        Level of CIs, masks and tests.
    parametrization : {"reference", "sum_to_zero"}
        Of the reported coefficients (maps always use sum-to-zero contrasts).
    family : str
        Refit family (``"auto"`` follows the head's link).
    remedy : {"auto", None, "firth", "ridge", "pca"}
        ``"auto"``: maximum likelihood, and if the refit rows are separated the remedy the data
        need (:func:`choose_estimator`); when the MLE exists the bias-reduced fit is also
        computed and shown beside it (:func:`bias_reduced_beside`). None: maximum likelihood only (a separated refit fails
        and the report says so). A name forces that remedy.
    engine : {"auto", "statsmodels", "fast"}
    top_units : int
        Units listed per class in the headline and receptive-field panels.
    top_k : int
        Patches per channel in the top-activation grids; ``patch_channels`` channels shown.
    patch_channels : int
    save_activations : bool
        Write ``activations.parquet`` with the report.
    """

    sections: Sequence[str] | None = None
    classes: Sequence[str] | None = None
    images: int | Sequence[str] = 4
    image_split: str | None = None
    alpha: float = 0.05
    parametrization: str = "reference"
    family: str = "auto"
    remedy: str | None = "auto"
    engine: str = "auto"
    top_units: int = 3
    top_k: int = 9
    patch_channels: int = 4
    save_activations: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sections or ()) - set(STEPS))
        if unknown:
            raise ValueError(f"plan sections {unknown} are not known; use names from {STEPS}.")
        if self.remedy not in REMEDY_CHOICES:
            raise ValueError(f"plan remedy={self.remedy!r}; use one of {REMEDY_CHOICES}.")
        if not 0 < self.alpha < 1:
            raise ValueError(f"plan alpha must be in (0, 1), got {self.alpha}.")

    def replace(self, **changes) -> Plan:
        return replace(self, **changes)


# ----------------------------------------------------------------------------- architecture
def _conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def applicable_steps(model: nn.Module, head) -> dict[str, str | None]:
    """For each step, None if it applies to this network, else why not (a sentence)."""
    convs = _conv_layers(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    gap = head is not None and head.gap
    no_gap = "not applicable: the head does not average conv maps (CAMs need a GAP head)"
    no_conv = "not applicable: the network has no convolutional layers"
    out: dict[str, str | None] = dict.fromkeys(STEPS)
    if head is None:
        return dict.fromkeys(STEPS, "not applicable: no linear head was detected")
    out["cam"] = None if gap else no_gap
    out["siddhartha"] = None if gap else no_gap
    out["gradcam"] = (no_conv if not convs else
                      "not needed: the head is GAP, so the exact CAM (with SE) is shown" if gap
                      else None)
    out["occlusion"] = None  # a perturbation of the input: any image classifier
    for step in ("patches", "deconvnet"):
        out[step] = None if convs else no_conv
    mlp = not convs and len(linears) == 2
    why_mlp = ("not applicable: receptive fields are the input weights of the head's units, "
               "which exist when one hidden Linear layer reads the pixels (this network has "
               f"{len(convs)} conv and {len(linears)} Linear layers)")
    out["receptive_fields"] = None if mlp else why_mlp
    out["olden_garson"] = None if mlp else why_mlp
    out["zero_one"] = (None if mlp and head.n_inputs == 1 and len(head.classes) == 2 else
                       "not applicable: the network does not have one hidden unit and two classes")
    return out


def subsample(data: LabeledImages, size: int | None, seed: int) -> LabeledImages:
    """A stratified, seeded subsample of ``size`` rows (all rows if ``size`` is None)."""
    if size is None or size >= len(data):
        return data
    if size < 2 * data.n_classes:
        raise ValueError(f"size={size} is too small: use at least 2 rows per class.")
    part = stratified_split(
        data.labels, data.ids, {"keep": size / len(data), "rest": 1 - size / len(data)}, seed=seed
    )
    return data.subset(part.reindex(data.ids).to_numpy() == "keep")


def describe_splits(splits, data_has_split: bool, seed: int) -> str:
    """One phrase saying where the split came from (for the report)."""
    from glminterp.data import DEFAULT_FRACTIONS

    if splits is None and data_has_split:
        return "the data's own split"
    if splits is None or (isinstance(splits, dict) and not isinstance(splits, pd.Series)):
        fr = DEFAULT_FRACTIONS if splits is None else splits
        return ("seeded stratified split, " + ", ".join(f"{k} {v:g}" for k, v in fr.items())
                + f", seed {seed}")
    if isinstance(splits, str) and splits in ("refit", "all"):
        return "every row is a refit row"
    if isinstance(splits, (str, Path)):
        return f"split file {Path(splits).name}"
    return "user-given split"


# ----------------------------------------------------------------------------- estimator choice
@dataclass(frozen=True)
class EstimatorChoice:
    """Which estimator the refit used and why (recorded in ``fit.json`` and the report)."""

    remedy: str | None
    estimator: str
    why: str
    tried: tuple[str, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict:
        return {"remedy": self.remedy, "estimator": self.estimator, "why": self.why,
                "tried": list(self.tried), "detail": self.detail}

    def _repr_html_(self) -> str:
        from html import escape

        return "<table>" + "".join(
            f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
            for k, v in self.to_dict().items()) + "</table>"


_ESTIMATORS = {None: "maximum likelihood", "firth": "Firth / bias-reduced likelihood",
               "ridge": "ridge-penalized likelihood", "pca": "maximum likelihood on principal "
               "components of the units"}


def choose_estimator(fit: Callable, remedy: str | None, n_classes: int):
    """Run ``fit(remedy=...)`` with the estimator the data need; return (result, choice).

    ``remedy="auto"`` tries the maximum-likelihood fit first; if the refit rows are separated
    (the MLE does not exist) it tries Firth's bias-reduced likelihood (for any softmax head
    where the installed refit supports it) and then ridge. Raises what the last try raised.
    """
    from glminterp.refit.errors import FitError
    from glminterp.refit.separation import SeparationError

    if remedy != "auto":
        res = fit(remedy=remedy)
        why = ("maximum likelihood, as the plan asked (remedy=None)" if remedy is None else
               f"remedy={remedy!r}, as the plan asked")
        return res, EstimatorChoice(remedy, _ESTIMATORS[remedy], why, (str(remedy),))
    try:
        return fit(remedy=None), EstimatorChoice(
            None, _ESTIMATORS[None], "The refit rows are not separated, so the "
            "maximum-likelihood estimate exists.", ("mle",))
    except SeparationError as e:
        sep = e
    tried, last = ["mle"], None
    for cand in ("firth", "ridge"):
        tried.append(cand)
        try:
            res = fit(remedy=cand)
        except (ValueError, FitError) as e:  # not available for this head / no optimum
            last = e
            continue
        skipped = "" if cand == "firth" else (
            f" Firth's bias-reduced fit did not converge for this {n_classes}-class head."
            if isinstance(last, FitError) else
            f" Firth's bias-reduced fit is not available for this {n_classes}-class head.")
        why = (f"The refit rows are separated ({_separation_phrase(sep)}): the "
               "maximum-likelihood estimate does not exist, so the head was refitted with "
               f"remedy={cand!r} ({_ESTIMATORS[cand]}).{skipped}")
        detail = f"Separation: {sep}" + (f" Firth: {last}" if last is not None else "")
        return res, EstimatorChoice(cand, _ESTIMATORS[cand], why, tuple(tried), detail)
    raise last  # pragma: no cover - ridge always exists


_BESIDE_WHY = (
    " It is the estimate shown (the model's own likelihood and its tests); the bias-reduced "
    "fit of the same model (remedy='firth', Kosmidis & Firth 2011) is shown beside it, since "
    "with few events per parameter the MLE is biased away from zero and the difference "
    "shows by how much.")


def bias_reduced_beside(fit: Callable, choice: EstimatorChoice):
    """The bias-reduced fit to show beside the MLE that ``choice`` made (``remedy="auto"``).

    Returns ``(result or None, choice)``: when ``choice`` is the maximum-likelihood estimate,
    ``fit(remedy="firth")`` of the same model, and the choice with ``why`` saying what is
    shown (and, if the bias-reduced fit failed, why it is not). Otherwise ``(None, choice)``:
    a remedy was used because the MLE does not exist, and ``why`` already says so.
    """
    if choice.remedy is not None or choice.tried != ("mle",):
        return None, choice
    try:
        res = fit(remedy="firth")
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:  # FitError: no optimum
        first = str(e).split(". ")[0]
        return None, replace(choice, why=choice.why + " It is the estimate shown; the "
                             f"bias-reduced fit beside it is not available ({first}).",
                             detail=f"Bias-reduced fit: {e}")
    return res, replace(choice, why=choice.why + _BESIDE_WHY, tried=("mle", "firth (beside)"))


def _separation_phrase(err) -> str:
    classes = list(getattr(err, "classes", ()) or ())
    n_units = int(getattr(err, "n_units", 0) or 0)
    if not classes:
        return str(err).split(". ")[0]
    shown = ", ".join(map(str, classes[:4])) + (", ..." if len(classes) > 4 else "")
    return (f"class{'es' if len(classes) > 1 else ''} {shown} perfectly predicted by a "
            f"direction using {n_units} unit{'s' if n_units != 1 else ''}")


# ----------------------------------------------------------------------------- the analysis
@dataclass
class _Steps:
    timings: dict = field(default_factory=dict)

    def time(self, name: str, fn: Callable, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


class Analysis:
    """Extraction, GLM refit, maps and report for one trained network and its data.

    Parameters
    ----------
    model : nn.Module
        The trained network (any module with a linear head; it is not retrained unless
        :meth:`train` is called, and every step leaves it as found).
    data : LabeledImages, (images, labels) arrays or tensors, Dataset, DataLoader or path
        See :func:`glminterp.inputs.as_labeled_images` (image folders, ``.npz``, IDX).
    labels, classes : optional
        Labels when ``data`` is an images array; class names (default: from the data).
    splits : optional
        See :func:`glminterp.inputs.resolve_splits`: a split file or column, fractions, or
        ``"refit"`` (every row is a held-out refit row). Default: the data's own split, else
        the seeded stratified split (train 0.5 / refit 0.3 / test 0.2).
    plan : Plan, optional
    seed : int
        Seeds the split, the subsample and the simulated thresholds.
    size : int, optional
        Rows drawn (stratified) from the data before splitting.
    name, title, description : str, optional
        Folder name, page title and one paragraph saying what the study is.
    architecture : str, optional
        How the model is described (default: its class name).
    model_kwargs : dict, optional
        Constructor arguments, recorded (and saved beside ``model.pt`` for the package's own
        architectures).
    progress : bool
    """

    def __init__(self, model: nn.Module, data, *, labels=None, classes=None, splits=None,
                 plan: Plan | None = None, seed: int = 0, size: int | None = None,
                 name: str | None = None, title: str | None = None, description: str = "",
                 architecture: str | None = None, model_kwargs: dict | None = None,
                 progress: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}.")
        self.model = model
        self.plan = plan or Plan()
        self.seed = int(seed)
        base = subsample(as_labeled_images(data, labels=labels, classes=classes), size, self.seed)
        self.split_source = describe_splits(splits, base.split is not None, self.seed)
        self.data = resolve_splits(base, splits, seed=self.seed)
        self.model_kwargs = None if model_kwargs is None else dict(model_kwargs)
        self.name = name or "analysis"
        self.architecture = architecture or type(model).__name__
        self.title = title or f"{self.architecture} on {self.data.name}: GLM refit of the head"
        self.description = description
        self.progress = progress
        self.history = None
        self.activations = None
        self.refit = None
        self.refit_error: str | None = None
        self.estimator: EstimatorChoice | None = None
        #: The bias-reduced fit shown beside the MLE (``remedy="auto"`` when the MLE exists).
        self.bias_reduced = None
        self.extras: dict = {}
        self.sections_run: dict[str, str] = {}
        self.folder: Path | None = None
        self._steps = _Steps()
        self._builder = None

    # -- attributes the report sections read
    @property
    def config(self) -> Plan:
        return self.plan

    @property
    def builder(self):
        """The :class:`~glminterp.report.builder.ReportBuilder` the steps add their figures to."""
        if self._builder is None:
            from glminterp.report.builder import ReportBuilder

            self._builder = ReportBuilder(self.title, self.name)
        return self._builder

    @property
    def timings(self) -> dict:
        return self._steps.timings

    @property
    def report(self) -> Path | None:
        from glminterp.report.builder import HTML_NAME

        return None if self.folder is None else self.folder / HTML_NAME

    def __repr__(self) -> str:
        done = [s for s, v in (("trained", self.history), ("extracted", self.activations),
                               ("refitted", self.refit)) if v is not None]
        return (f"Analysis({self.name!r}: {self.architecture} on {self.data.name}, "
                f"{len(self.data)} rows; {', '.join(done) or 'nothing run yet'})")

    def _say(self, msg: str) -> None:
        if self.progress:
            print(f"[glminterp] {msg}", flush=True)

    # -- steps
    def train(self, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
              weight_decay: float = 0.0, trainer: Callable | None = None) -> Analysis:
        """Train the model on the train split (only when asked; the studies do).

        ``trainer`` has the signature of :func:`glminterp.train_model` (the default) and
        returns a :class:`~glminterp.train.TrainingHistory`.
        """
        from glminterp.train import train_model

        train = self.data.get_split("train")
        self._say(f"{self.name}: training {self.architecture} on {len(train)} rows")
        self.history = self._steps.time(
            "train", trainer or train_model, self.model, train, epochs=epochs,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=self.seed,
            progress=self.progress)
        return self

    def extract(self):
        """Head-input activations of every row (:func:`glminterp.extract_activations`)."""
        from glminterp.activations import extract_activations

        self._say("extracting the head's input activations")
        self.activations = self._steps.time(
            "extract", extract_activations, self.model, self.data, progress=self.progress,
            seed=self.seed)
        return self.activations

    def refit_head(self):
        """Refit the head on the refit split with the estimator the data need (recorded).

        Returns the :class:`~glminterp.RefitResult`, or None when no estimator applies
        (``refit_error`` says why).
        """
        import glminterp

        if self.activations is None:
            self.extract()
        p = self.plan
        kw = {"split": "refit", "family": p.family, "parametrization": p.parametrization,
              "alpha": p.alpha, "engine": p.engine, "progress": self.progress}
        if self.history is not None:
            kw["train_ids"] = self.history.train_ids

        def fit(remedy):
            self._say(f"refitting the head as a GLM on the refit split (remedy={remedy})")
            return glminterp.refit_output_layer(self.activations, remedy=remedy, **kw)

        t0 = time.perf_counter()
        try:
            self.refit, self.estimator = choose_estimator(
                fit, p.remedy, len(self.activations.head.classes))
            self.refit_error = None
            if p.remedy == "auto":
                self.bias_reduced, self.estimator = bias_reduced_beside(fit, self.estimator)
        except ImportError as e:
            self.refit_error = f"the refit module is not available in this installation ({e})."
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            self.refit_error = f"{type(e).__name__}: {e}"
        finally:
            self.timings["refit"] = time.perf_counter() - t0
        if self.estimator is not None and self.estimator.remedy is not None and p.remedy == "auto":
            self.extras["remedy_fallback"] = self.estimator.why
        if self.refit_error:
            self._say(f"refit not available: {self.refit_error}")
        return self.refit

    def applicable(self) -> dict[str, str | None]:
        """For each visualization step: None if it applies, else why not."""
        if self.activations is None:
            self.extract()
        return applicable_steps(self.model, self.activations.head)

    def images(self) -> LabeledImages:
        """The images the per-image maps show (see :class:`Plan`): one per class by default."""
        split = self.plan.image_split or ("test" if "test" in set(self.data.split) else "refit")
        pool = self.data.get_split(split)
        if not isinstance(self.plan.images, int):
            want = [str(s) for s in self.plan.images]
            pos = {s: i for i, s in enumerate(self.data.ids.tolist())}
            missing = [s for s in want if s not in pos]
            if missing:
                raise ValueError(f"plan images: sample ids {missing[:3]} are not in the data.")
            return self.data.subset(np.array([pos[s] for s in want], dtype=int))
        classes = [str(c) for c in (self.plan.classes or self.data.classes)]
        labels = pool.labels.numpy()
        picks = [int(np.flatnonzero(labels == self.data.classes.index(c))[0]) for c in classes
                 if self.data.classes.index(c) in set(labels.tolist())]
        return pool.subset(np.array(picks[: self.plan.images], dtype=int))

    def visualize(self) -> dict:
        """Run the maps and visualizations that apply (or the plan's); returns ``extras``.

        A step that fails becomes a ``"<step>_error"`` entry (and a note in the report); it
        never stops the analysis.
        """
        from glminterp import analysis_steps

        if self.refit is None and self.refit_error is None:
            self.refit_head()
        applies = self.applicable()
        wanted = list(self.plan.sections) if self.plan.sections is not None else list(STEPS)
        images = self.images()
        for step in STEPS:
            if applies[step] is not None:
                self.sections_run[step] = applies[step]
                continue
            if step not in wanted:
                self.sections_run[step] = "not in the plan"
                continue
            t0 = time.perf_counter()
            try:
                analysis_steps.RUNNERS[step](self, images)
                self.sections_run[step] = "ok"
            except Exception as e:  # noqa: BLE001 - one visualization must not sink the analysis
                self.extras[f"{step}_error"] = f"{type(e).__name__}: {e}"
                self.extras[f"{step}_traceback"] = traceback.format_exc()
                self.sections_run[step] = f"Not available ({type(e).__name__}: {e})"
            finally:
                self.timings[step] = time.perf_counter() - t0
        return self.extras

    def run(self) -> Analysis:
        """Every step not yet done: extract, refit, visualize. Returns ``self``."""
        if self.activations is None:
            self.extract()
        if self.refit is None and self.refit_error is None:
            self.refit_head()
        if not self.sections_run:
            self.visualize()
        return self

    def write_report(self, folder: str | Path, *, command_line: Sequence[str] | None = None) -> Path:
        """Write the report folder (report.html, CSV/JSON results, figures); returns report.html.

        Raises
        ------
        RefitFailedError
            If the refit failed (no report is written; an earlier one is kept).
        OutputPathError
            If ``folder`` exists and is not glminterp output.
        """
        from glminterp.errors import RefitFailedError
        from glminterp.outputs import check_output_folder
        from glminterp.report.analysis import write_report

        check_output_folder(folder)
        self.run()
        if self.refit is None:  # the central step: no report rather than empty coefficients
            raise RefitFailedError(
                f"{self.name}: the GLM refit failed ({self.refit_error}); no report was written "
                f"and {folder} was left as it was. Try more rows, another remedy "
                "(Plan(remedy=...), --remedy) or another seed.")
        self.folder = Path(folder)
        self._say(f"writing {self.folder}")
        return write_report(self, self.folder, command_line=command_line)

    # -- results
    def top_units(self, n: int = 3) -> dict[str, pd.DataFrame]:
        """The ``n`` most significant units per class (empty if the refit failed)."""
        from glminterp.report.builder import top_units

        return {} if self.refit is None else top_units(self.refit.coefficients, n)

    def summary_lines(self, n: int = 3) -> list[str]:
        """Human-readable summary: the report's path, the estimator, the top units per class."""
        lines = [f"Report: {self.report}"]
        if self.refit is None:
            lines.append(f"Refit not available: {self.refit_error}")
            return lines
        lines.append(f"Estimator: {self.estimator.estimator} ({self.estimator.why})")
        lines.append(f"Most significant units per class (top {n} by p-value):")
        for cls, df in self.top_units(n).items():
            units = ", ".join(f"{t} (z={z:+.2f}, p_holm={ph:.2g})"
                              for t, z, ph in zip(df["term"], df["z"], df["p_holm"]))
            lines.append(f"  class {cls}: {units}")
        return lines

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>"
                       for k, v in self.sections_run.items())
        top = ""
        if self.refit is not None:
            top = pd.concat(self.top_units(self.plan.top_units).values()).to_html(
                index=False, float_format=lambda v: f"{v:.4g}")
        return (f"<p><b>{escape(repr(self))}</b></p>"
                + (f"<p>{escape(self.estimator.why)}</p>" if self.estimator else "")
                + top + (f"<table><tr><th>step</th><th>status</th></tr>{rows}</table>"
                         if rows else ""))


def model_example(data: LabeledImages, n: int = 2) -> torch.Tensor:
    """A small batch of the analysis's inputs (for model summaries)."""
    return data.images[:n]
