"""The report's first screen, computed from saved results: headline units, limits, comparison.

Everything here reads the tidy coefficient table and the ``fit.json`` record (so
``glminterp report`` can rebuild it) and returns tables or sentences; the figures that draw
them (:mod:`glminterp.plots.analysis`) compute nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats


def _units(coefficients: pd.DataFrame) -> pd.DataFrame:
    return coefficients[coefficients["term"].astype(str) != "const"]


def simultaneous_ci(coefficients: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Unit coefficients with Bonferroni-simultaneous Wald CIs over all ``m`` of them.

    Adds ``ci_lower_adj, ci_upper_adj = coef -/+ z_{1 - alpha / (2m)} se``: the intervals that
    hold jointly at level ``1 - alpha``, matching the Holm / Bonferroni family of ``p_holm``.
    """
    units = _units(coefficients).copy()
    m = max(int(units["se"].notna().sum()), 1)
    q = float(stats.norm.ppf(1 - alpha / (2 * m)))
    units["ci_lower_adj"] = units["coef"] - q * units["se"]
    units["ci_upper_adj"] = units["coef"] + q * units["se"]
    return units


def headline_table(coefficients: pd.DataFrame, alpha: float, n: int = 3) -> pd.DataFrame:
    """Per class: how many units matter after Holm correction, and the strongest ``n`` of them
    with their simultaneous CIs (``unit coef [lower, upper]``)."""
    units = simultaneous_ci(coefficients, alpha)
    p_col = "p_holm" if "p_holm" in units else "p"
    rows = []
    for cls, grp in units.groupby("class", sort=False):
        sig = grp[grp[p_col] < alpha]
        top = sig.reindex(sig["z"].abs().sort_values(ascending=False, kind="stable").index).head(n)
        shown = "; ".join(f"{t} {c:+.3g} [{lo:.3g}, {hi:.3g}]" for t, c, lo, hi in zip(
            top["term"], top["coef"], top["ci_lower_adj"], top["ci_upper_adj"]))
        rows.append({"class": str(cls), "units that matter": f"{len(sig)} of {len(grp)}",
                     f"strongest (coef [{100 * (1 - alpha):g}% simultaneous CI])": shown or "none"})
    return pd.DataFrame(rows)


def agreement_sentence(agreement: Mapping | None) -> str:
    """The agreement test of the network's head with the refit, in words."""
    if not agreement:
        return "The agreement test of the network's head with the refit was not recorded."
    text = agreement.get("interpretation")
    if text:  # its first sentence; the whole interpretation is in the agreement section
        text = str(text)
        cut = text.find(". ")
        return text if cut < 0 else text[: cut + 1]
    if agreement.get("p_value") is None:
        return "The agreement test is not defined for this refit."
    verdict = "rejected" if agreement.get("reject") else "not rejected"
    return (f"H0 (the network's head equals the refit) is {verdict}: chi2 = "
            f"{agreement['statistic']:.4g} on {agreement['df']} df, p = {agreement['p_value']:.3g}.")


def limits(fit: Mapping) -> list[str]:
    """The diagnostics that limit the inference, as sentences (empty when none does)."""
    out = []
    diag = fit.get("diagnostics") if isinstance(fit.get("diagnostics"), Mapping) else {}
    epp = (fit.get("study") or {}).get("events_per_parameter", diag.get("events_per_parameter"))
    warned = " ".join(str(w) for w in fit.get("warnings") or []).lower()
    if epp is not None and epp < 10 and "events per parameter" not in warned:
        out.append(f"Few events per parameter ({epp:.3g} < 10): the MLE is biased away from 0 and "
                   "Wald p-values can be miscalibrated; prefer the likelihood-ratio tests.")
    remedy = fit.get("remedy")
    if isinstance(remedy, Mapping) and remedy.get("name"):
        out.append(f"Estimator: remedy={remedy['name']!r} instead of maximum likelihood. "
                   f"{remedy.get('inference') or ''}".strip())
    elif diag.get("separated"):
        out.append("The refit rows are separated: the maximum-likelihood estimate does not exist.")
    if diag.get("train_overlap"):
        out.append(f"{diag['train_overlap']} refit rows were also training rows: the refit's "
                   "inference is not valid on them.")
    dropped = fit.get("dropped_units") or []
    if dropped:
        out.append(f"{len(dropped)} units were dropped before the fit (dead or collinear).")
    cond = diag.get("condition_number")
    if cond is not None and cond > 1e4:
        out.append(f"The design is ill-conditioned (condition number {cond:.3g}): standard "
                   "errors of correlated units are large.")
    if fit.get("error"):
        out.append(f"The refit failed: {fit['error']}")
    shown = [w for w in fit.get("warnings") or []
             if not (isinstance(remedy, Mapping) and "PENALIZED" in str(w).upper())]
    out.extend(str(w) for w in shown[:3])  # the rest are in the diagnostics section
    return out


def comparison_frame(coefficients: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Network weight and GLM estimate per (class, unit) on the GLM's z scale, for plotting.

    ``x = network_weight / se``, ``y = coef / se`` (the Wald z), ``y_lo, y_hi`` the CI divided
    by ``se``; ``significant`` is ``p_holm < alpha``. Rows without a network weight or SE, and
    near-constant units (SE below a thousandth of the median SE), are dropped; their number is
    ``frame.attrs["n_degenerate"]``.
    """
    units = _units(coefficients).dropna(subset=["network_weight", "coef", "se"])
    # near-constant units (SE a thousandth of the typical one) would put the network's weight
    # at |x| ~ 1e8 and flatten every other point: they are left out, and counted
    floor = 1e-3 * float(units["se"].median()) if len(units) else 0.0
    keep = units["se"] > floor
    n_degenerate = int((~keep).sum())
    units = units[keep]
    se = units["se"].to_numpy(dtype=float)
    p_col = "p_holm" if "p_holm" in units else "p"
    frame = pd.DataFrame({
        "class": units["class"].astype(str).to_numpy(),
        "term": units["term"].astype(str).to_numpy(),
        "x": units["network_weight"].to_numpy(dtype=float) / se,
        "y": units["coef"].to_numpy(dtype=float) / se,
        "y_lo": units["ci_lower"].to_numpy(dtype=float) / se,
        "y_hi": units["ci_upper"].to_numpy(dtype=float) / se,
        "significant": (units[p_col].to_numpy(dtype=float) < alpha) & np.isfinite(se),
    })
    frame.attrs["n_degenerate"] = n_degenerate
    return frame
