"""The report of an :class:`~glminterp.analysis.Analysis`: first screen, sections, files.

The first screen (the ``overview`` section) says what was fitted (model, data, split sizes,
family, estimator and why) beside the headline results (units that matter per class, the
agreement test in words, the diagnostics that limit the inference); the sections below hold
the figures and the long tables (folded, with their CSV files).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glminterp.report import builder as rp

#: Visualization step -> (report section, title).
STEP_INFO: dict[str, tuple[str, str]] = {
    "cam": ("cam", "CAM gallery (network and GLM CAMs, SE, z, masks)"),
    "gradcam": ("cam", "Grad-CAM"),
    "occlusion": ("classic", "Occlusion sensitivity"),
    "siddhartha": ("classic", "Discriminative / confusing channel sets"),
    "patches": ("classic", "Top activating patches with deconvnet projections"),
    "deconvnet": ("classic", "Deconvnet projections"),
    "receptive_fields": ("classic", "Receptive fields of the top units"),
    "olden_garson": ("classic", "Olden and Garson pixel importance"),
    "zero_one": ("classic", "Zero-one analysis of the single unit"),
}


def split_table(data) -> pd.DataFrame:
    """Rows per class (index) and split (columns)."""
    df = pd.DataFrame({"class": [data.classes[i] for i in data.labels.tolist()],
                       "split": data.split})
    return pd.crosstab(df["class"], df["split"]).reindex(list(data.classes)).fillna(0).astype(int)


def accuracy_by_split(acts) -> pd.DataFrame:
    """Network accuracy per split (rows, accuracy)."""
    obs = acts.obs
    hit = (obs["pred"].astype("int64") == obs["label"].astype("int64")).astype(float)
    out = hit.groupby(obs["split"]).agg(["size", "mean"]).rename(
        columns={"size": "rows", "mean": "network accuracy"}).reset_index()
    order = {"train": 0, "refit": 1, "test": 2}
    key = out["split"].map(lambda s: (order.get(s, 9), s))
    return out.iloc[sorted(range(len(out)), key=lambda i: key.iloc[i])].reset_index(drop=True)


def events_per_parameter(acts) -> float:
    """Rows of the rarest class on the refit split per live unit (de Jong et al. 2019)."""
    from glminterp.refit.diagnostics import events_per_parameter as epp

    refit_rows = acts.subset(split="refit")
    p = int((refit_rows.head_features().std(axis=0) > 0).sum())
    return epp(refit_rows.obs["label"].to_numpy(dtype=np.int64), p)


def _n_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _split_sizes(data) -> str:
    names, counts = np.unique(data.split, return_counts=True)
    order = {"train": 0, "refit": 1, "test": 2}
    pairs = sorted(zip(names.tolist(), counts.tolist()), key=lambda t: (order.get(t[0], 9), t[0]))
    return " / ".join(f"{n} {c}" for n, c in pairs)


BESIDE_NAME = "estimators.csv"


def estimator_comparison(mle: pd.DataFrame, br: pd.DataFrame) -> pd.DataFrame:
    """The MLE's and the bias-reduced fit's coefficients side by side, per class and term.

    ``shift_se`` is (bias-reduced - MLE) in units of the MLE's standard error; ``ratio`` is
    bias-reduced / MLE (below 1: the MLE is farther from zero).
    """
    keys = ["class", "term"]
    cols = ["coef", "se", "p_holm"]
    left = mle[keys + cols].rename(columns={c: f"{c}_mle" for c in cols})
    right = br[keys + cols].rename(columns={c: f"{c}_br" for c in cols})
    out = left.merge(right, on=keys, how="inner", sort=False)
    out["shift_se"] = (out["coef_br"] - out["coef_mle"]) / out["se_mle"]
    out["ratio"] = out["coef_br"] / out["coef_mle"].where(out["coef_mle"] != 0)
    return out


def comparison_summary(table: pd.DataFrame, alpha: float, agreement_mle: dict | None,
                       agreement_br: dict | None) -> dict:
    """What the side-by-side table says, in numbers (unit coefficients; intercepts excluded)."""
    units = table[table["term"] != "const"]
    ratio = units["ratio"].abs().replace(np.inf, np.nan).dropna()
    out = {
        "coefficients compared": len(units),
        "median |bias-reduced / MLE|": float(ratio.median()) if len(ratio) else None,
        "share of coefficients the MLE puts farther from zero":
            float((ratio < 1).mean()) if len(ratio) else None,
        "largest |shift| (MLE standard errors)": float(units["shift_se"].abs().max()),
        "median |shift| (MLE standard errors)": float(units["shift_se"].abs().median()),
        f"Holm-significant at {alpha:g} (MLE)": int((units["p_holm_mle"] < alpha).sum()),
        f"Holm-significant at {alpha:g} (bias-reduced)": int((units["p_holm_br"] < alpha).sum()),
    }
    for name, ag in (("MLE", agreement_mle), ("bias-reduced", agreement_br)):
        if isinstance(ag, dict) and ag.get("p_value") is not None:
            out[f"agreement test p-value ({name})"] = float(ag["p_value"])
    return out


def beside_record(refit, br, alpha: float, agreement_mle: dict | None) -> dict | None:
    """``fit.json["bias_reduced_beside"]``: the bias-reduced fit ``br`` shown beside the MLE."""
    if br is None or refit is None:
        return None
    rec = rp.refit_fit_record(br)
    table = estimator_comparison(refit.coefficients, br.coefficients)
    return rp.to_jsonable({
        "remedy": rec.get("remedy"), "fit": rec.get("fit"), "agreement": rec.get("agreement"),
        "summary": comparison_summary(table, alpha, agreement_mle, rec.get("agreement")),
    })


def fit_record(a, epp: float) -> dict:
    """``fit.json``: the refit's record, the estimator choice and the study's settings."""
    fit = rp.refit_fit_record(a.refit) if a.refit is not None else {}
    if a.refit_error:
        fit["error"] = a.refit_error
    if a.extras.get("remedy_fallback"):
        fit["remedy_fallback"] = a.extras["remedy_fallback"]
    if a.estimator is not None:
        fit["estimator"] = a.estimator.to_dict()
    beside = beside_record(a.refit, getattr(a, "bias_reduced", None), float(a.plan.alpha),
                           fit.get("agreement"))
    if beside is not None:
        fit["bias_reduced_beside"] = beside
    acc = accuracy_by_split(a.activations)
    study = {
        "name": a.name, "seed": a.seed, "config": dataclasses.asdict(a.plan),
        "events_per_parameter": epp,
        "rows": {s: int(n) for s, n in zip(acc["split"], acc["rows"])},
        "network_accuracy": {s: float(v) for s, v in zip(acc["split"], acc["network accuracy"])},
        "splits": a.split_source, "steps": dict(a.sections_run),
    }
    if a.history is not None:
        study["training"] = dict(a.history.config)
        study["final_training_loss"] = float(a.history.curve["loss"].iloc[-1])
    fit["study"] = study
    return rp.to_jsonable(fit)


def _fitted(rb: rp.ReportBuilder, a, fit: dict) -> None:
    head = a.activations.head
    d = a.data
    acc = accuracy_by_split(a.activations)
    trained = ("trained here on the train split" if a.history is not None
               else "trained elsewhere; not retrained")
    est = a.estimator
    rb.items("overview", {
        "model": f"{a.architecture}, {_n_params(a.model):,} parameters ({trained})",
        "head": f"{head.name}: {head.n_inputs} units -> {head.n_outputs} outputs, {head.link} "
                f"link, inputs from {head.input_layer}{' (global average pooling)' if head.gap else ''}",
        "data": f"{d.name}: {len(d)} images of {'x'.join(str(s) for s in d.images.shape[1:])}, "
                f"{d.n_classes} classes",
        "splits": f"{_split_sizes(d)} ({a.split_source})",
        "network accuracy": ", ".join(f"{s} {v:.3f}" for s, v in
                                      zip(acc["split"], acc["network accuracy"])),
        "family": (f"{fit.get('family')} GLM of the class on the head's {head.n_inputs} inputs, "
                   f"{fit.get('n_obs')} refit rows" if a.refit is not None else "not fitted"),
        "estimator": est.estimator if est is not None else f"none ({a.refit_error})",
        "why this estimator": est.why if est is not None else "the refit failed",
        **_beside_item(fit),
    }, caption="What was fitted")


def _beside_item(fit: dict) -> dict:
    summ = (fit.get("bias_reduced_beside") or {}).get("summary")
    if not summ:
        return {}
    alpha = float(fit.get("alpha") or 0.05)
    ratio = summ.get("median |bias-reduced / MLE|")
    return {"bias-reduced fit beside it": (
        (f"median |bias-reduced / MLE| {ratio:.3g}; " if ratio is not None else "")
        + f"largest shift {summ['largest |shift| (MLE standard errors)']:.3g} MLE SEs; "
        f"Holm-significant unit coefficients {summ[f'Holm-significant at {alpha:g} (MLE)']} "
        f"(MLE) vs {summ[f'Holm-significant at {alpha:g} (bias-reduced)']} (bias-reduced); "
        f"see the fit section and {BESIDE_NAME}")}


def _estimators_table(est, fit: dict) -> pd.DataFrame:
    """One row per estimator: whether it exists here and what the report does with it."""
    if est is None:
        return pd.DataFrame()
    stats = fit.get("fit") or {}
    conv = (f"converged: {stats.get('convergence_criterion') or stats.get('converged')}"
            if stats else "")
    if est.remedy is None:
        br = fit.get("bias_reduced_beside")
        br_fit = (br or {}).get("fit") or {}
        rows = [("maximum likelihood", "exists: the refit rows are not separated (a finite "
                 "optimum was found; " + conv + ")", "shown: coefficients.csv and every table "
                 "and map below")]
        if br is not None:
            rows.append(("bias-reduced (remedy='firth')",
                         f"converged: {br_fit.get('convergence_criterion') or br_fit.get('converged')}",
                         f"beside the MLE: this section and {BESIDE_NAME}"))
        else:
            rows.append(("bias-reduced (remedy='firth')", "not fitted", est.detail or
                         "not computed for this plan (remedy was not 'auto')"))
    else:
        rows = []
        if "mle" in est.tried:
            rows.append(("maximum likelihood", "does not exist: the refit rows are separated, "
                         "so the likelihood has no finite maximum", "not shown (it does not "
                         "exist)"))
        rows.append((est.estimator + f" (remedy={est.remedy!r})", conv or "fitted",
                     "shown: coefficients.csv and every table and map below"))
    return pd.DataFrame(rows, columns=["estimator", "on these refit rows", "in this report"])


def beside_section(rb: rp.ReportBuilder, est, refit, br, fit: dict, *,
                   say_why: bool = True) -> None:
    """The estimator choice ``est`` as a table with its reason (unless ``say_why`` is False:
    the section says it already), and the MLE ``refit`` beside the bias-reduced fit ``br``
    (when the MLE exists and ``br`` was fitted)."""
    table = _estimators_table(est, fit) if refit is not None else pd.DataFrame()
    if table.empty:
        return
    rb.table("fit", table, caption="Estimators: which exist on the refit rows, and which the "
             "report shows")
    if say_why:
        rb.text("fit", f"Why: {est.why}")
    if br is None:
        return
    side = estimator_comparison(refit.coefficients, br.coefficients)
    rb.add_csv(BESIDE_NAME, side)
    rb.items("fit", fit["bias_reduced_beside"]["summary"],
             caption="Maximum likelihood beside the bias-reduced fit (unit coefficients; shift = "
             "bias-reduced - MLE in MLE standard errors)")
    shown = side.reindex(side["shift_se"].abs().sort_values(ascending=False, kind="stable").index)
    rb.table("fit", shown, max_rows=30, csv=BESIDE_NAME,
             caption="MLE and bias-reduced coefficients side by side, largest shift first")


def _data_section(rb: rp.ReportBuilder, a) -> None:
    from glminterp.plots import report as plots

    d = a.data
    prep = {f"pixels: {k}": v for k, v in (d.preprocessing or {}).items()}
    rb.items("data", {
        "data set": d.name, "rows used": len(d),
        "image size (C x H x W)": " x ".join(str(s) for s in d.images.shape[1:]),
        "classes": ", ".join(d.classes), "splits": a.split_source, **prep,
        "data SHA-256": d.fingerprint(),
    }, caption="Data")
    counts = split_table(d)
    rb.table("data", counts, caption="Rows per class and split", index=True, top=30)
    rb.figure("data", plots.split_counts(counts), "splits")
    if "train" in set(d.split):
        rb.text("data", "The GLM is refitted on the held-out refit split only, never on rows the "
                "network was trained on, so its inference is valid (sample splitting); the test "
                "split is for evaluation and the images shown.")
    else:
        rb.text("data", "Every row is a refit row: the network was trained elsewhere on other "
                "data, so the refit's inference on these rows is valid (sample splitting).")


def _model_section(rb: rp.ReportBuilder, a) -> None:
    from glminterp.model_summary import layer_table
    from glminterp.plots import report as plots

    layers = layer_table(a.model, a.data.images[:2])
    rb.add_csv("layers.csv", layers)
    rb.table("model", layers, caption=f"{a.architecture}: layers in call order", top=40,
             csv="layers.csv")
    head = a.activations.head
    info = {"head": f"{head.name} ({head.n_inputs} -> {head.n_outputs}, {head.link} link, "
                    f"link from {head.link_source})",
            "head input layer": f"{head.input_layer} (GAP: {'yes' if head.gap else 'no'})"}
    if a.model_kwargs:
        info["constructor arguments"] = ", ".join(f"{k}={v}" for k, v in a.model_kwargs.items())
    if a.history is not None:
        info.update({f"training {k}": v for k, v in a.history.config.items()})
    rb.items("model", info, caption="Head and training")
    if a.history is not None:
        rb.figure("model", plots.training_curve(a.history.curve), "training_curve")
    rb.table("model", accuracy_by_split(a.activations), caption="Network accuracy per split")


def _steps_sections(rb: rp.ReportBuilder, a) -> None:
    """Which maps ran, which do not apply (and why), then the steps' own blocks."""
    from glminterp.analysis_steps import step_table

    ran = a.sections_run
    rb.table("classic", step_table(ran), top=20,
             caption="Maps and visualizations: what ran for this architecture, and why the "
             "others do not apply")
    for step, status in ran.items():
        sec, title = STEP_INFO[step]
        if status.startswith("Not available"):
            rb.note(sec, f"{title}: {status}.")
    if ran.get("cam") != "ok" and ran.get("gradcam") != "ok":
        why = ran.get("cam", "not in the plan")
        rb.note("cam", f"Not applicable: {why.removeprefix('not applicable: ')}." if
                why.startswith("not applicable") else f"CAMs were not computed ({why}).")
    for sec in ("cam", "classic"):
        for block in a.builder.sections[sec]:
            rb.sections[sec].append(block)
    rb.files.update(a.builder.files)


def write_report(a, folder: str | Path, *, command_line=None) -> Path:
    """Write ``folder`` (report.html and every result file) for the analysis ``a``."""
    import glminterp

    rb = rp.ReportBuilder(a.title, a.name)
    epp = events_per_parameter(a.activations)
    fit = fit_record(a, epp)
    _fitted(rb, a, fit)
    _data_section(rb, a)
    _model_section(rb, a)
    coef = a.refit.coefficients if a.refit is not None else pd.DataFrame()
    if a.extras.get("remedy_fallback"):
        rb.warning("fit", a.extras["remedy_fallback"])
        if a.estimator.detail:
            rb.text("fit", a.estimator.detail)
    beside_section(rb, a.estimator, a.refit, getattr(a, "bias_reduced", None), fit,
                   say_why=not a.extras.get("remedy_fallback"))  # the warning above says why
    rp.add_refit_sections(rb, coef, fit)
    _steps_sections(rb, a)
    rb.summary = [a.description] if a.description else []
    rb.add_csv(rp.COEF_NAME, coef)
    rb.add_json(rp.FIT_NAME, fit)
    if a.history is not None:
        rb.add_csv("training_curve.csv", a.history.curve)
    rb.add_csv("splits.csv", pd.DataFrame({"sample_id": a.data.ids, "split": a.data.split}))
    acts = a.activations
    if a.plan.save_activations:
        rb.add_file("activations.parquet",
                    lambda p: dataclasses.replace(acts, maps={}).to_parquet(p))
    if a.model_kwargs is not None and a.architecture in glminterp.models.ARCHITECTURES:
        rb.add_file("model.pt", lambda p: glminterp.save_checkpoint(
            a.model, p, architecture=a.architecture, input_shape=a.data.images.shape[1:],
            **a.model_kwargs))
    else:
        rb.add_file("model.pt", lambda p: torch.save(a.model.state_dict(), p))
    prov = rp.provenance(
        seeds={"split": a.seed, "init": a.seed, "shuffle": a.seed, "subsample": a.seed},
        data_hash=a.data.fingerprint(),
        timings={**a.timings, "total": sum(a.timings.values())},
        command_line=command_line, extra={"study": a.name, "dataset": a.data.name},
    )
    return rb.write(folder, provenance=prov)


def write_activations_report(path: str | Path, folder: str | Path, *, plan=None,
                             progress: bool = True, command_line=None) -> Path:
    """Refit and report from saved activations (no model or images: no maps)."""
    import glminterp
    from glminterp.activations import Activations
    from glminterp.analysis import Plan, bias_reduced_beside, choose_estimator

    plan = plan or Plan()
    acts = Activations.read_parquet(path)
    kw = {"split": "refit", "family": plan.family, "parametrization": plan.parametrization,
          "alpha": plan.alpha, "engine": plan.engine, "progress": progress}
    def fit_with(remedy):
        return glminterp.refit_output_layer(acts, remedy=remedy, **kw)

    refit, choice = choose_estimator(fit_with, plan.remedy, len(acts.head.classes))
    br = None
    if plan.remedy == "auto":
        br, choice = bias_reduced_beside(fit_with, choice)
    fit = rp.refit_fit_record(refit)
    fit["estimator"] = choice.to_dict()
    beside = beside_record(refit, br, float(plan.alpha), fit.get("agreement"))
    if beside is not None:
        fit["bias_reduced_beside"] = beside
    head = acts.head
    sizes = acts.obs["split"].value_counts().sort_index()
    rb = rp.ReportBuilder(f"GLM refit of {Path(path).name}", Path(folder).name)
    rb.items("overview", {
        "activations": f"{Path(path).name}: {len(acts)} rows",
        "head": f"{head.name}: {head.n_inputs} units -> {head.n_outputs} outputs, {head.link} link",
        "splits": " / ".join(f"{k} {v}" for k, v in sizes.items()),
        "family": f"{refit.family} GLM, {refit.n_obs} refit rows",
        "estimator": choice.estimator, "why this estimator": choice.why, **_beside_item(fit),
    }, caption="What was fitted")
    beside_section(rb, choice, refit, br, fit)
    rp.add_refit_sections(rb, refit.coefficients, fit)
    for sec in ("cam", "classic"):
        rb.note(sec, "Not applicable: the report was built from saved activations, without the "
                "network or its images (run `glminterp analyze --model ... --images ...`).")
    rb.add_csv(rp.COEF_NAME, refit.coefficients)
    rb.add_json(rp.FIT_NAME, rp.to_jsonable(fit))
    return rb.write(folder, provenance=rp.provenance(command_line=command_line,
                                                     extra={"activations": str(path)}))
