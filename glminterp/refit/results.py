"""Results of a refit: tidy tables computed from the estimator protocol.

:class:`RefitResult` holds what every estimator gives (:class:`~glminterp.refit.estimators.base.
EstimatorFit`) and computes the coefficient table in any parametrization, the multiple-testing
corrections, the per-unit tests, the fit statistics and the agreement test from it, with no
knowledge of which estimator ran. Subclasses change only what their inference changes:
:class:`MLRefitResult` (likelihood-ratio tests), :class:`FirthRefitResult` (penalized
likelihood-ratio tests and profile intervals), :class:`MultinomialBRRefitResult` (Wald tables,
penalized likelihood-ratio agreement test), :class:`PenalizedRefitResult` (no test against
the network's head). All attributes are read-only; tables are cached and returned as copies.
"""

from __future__ import annotations

import gc
import html

import numpy as np
import pandas as pd
from scipy import stats

from glminterp.head import Head, to_reference, to_sum_to_zero
from glminterp.refit import diagnostics as dg
from glminterp.refit import likelihood as lk
from glminterp.refit.parametrize import sum_to_zero_cov

#: Columns of the multiple-testing adjustments in the tables and their methods; any method of
#: :data:`~glminterp.refit.likelihood.P_ADJUST_METHODS` (Benjamini-Yekutieli included) is
#: available from :meth:`RefitResult.multiple_testing`.
ADJUSTMENTS = (("p_holm", "holm"), ("p_bh", "fdr_bh"))
_SUM_KEYS = ("llf", "llnull", "deviance", "null_deviance", "lr_statistic", "aic", "bic")


def _adjust(df: pd.DataFrame, rows: np.ndarray) -> None:
    """Holm / BH / BY across the finite p-values of ``rows`` (in place; NaN elsewhere)."""
    for col, method in ADJUSTMENTS:
        df[col] = np.nan
        pv = df.loc[rows, "p"].to_numpy()
        ok = np.isfinite(pv)
        if ok.any():
            adj = np.full(pv.shape, np.nan)
            adj[ok] = lk.p_adjust(pv[ok], method)
            df.loc[rows, col] = adj


def _sum_stats(per: list[dict]) -> dict:
    if len(per) == 1:
        return dict(per[0])
    out = {}
    for key in _SUM_KEYS:
        vals = [s[key] for s in per]
        out[key] = None if any(v is None for v in vals) else float(sum(vals))
    for key in ("lr_df", "n_params"):
        vals = [s[key] for s in per]
        out[key] = None if any(v is None for v in vals) else int(sum(vals))
    out["converged"] = all(s["converged"] for s in per)
    if all("penalized_llf" in s for s in per):
        out["penalized_llf"] = float(sum(s["penalized_llf"] for s in per))
    return out


class RefitResult:
    """A refitted output layer: coefficients, covariance, tests and the network's own head.

    Built by :meth:`OutputLayerGLM.fit <glminterp.refit.model.OutputLayerGLM.fit>` (or
    :func:`~glminterp.refit.refit_output_layer`). Coefficient matrices are ``(terms, classes)``
    DataFrames; covariances are indexed by ``(class, term)`` pairs, class outer (statsmodels'
    order).
    """

    def __init__(self, *, model, fit, parametrization, alpha, cov_type, diagnostics, warnings_,
                 bootstrap=None, checks=(), remedy=None) -> None:
        self._model = model
        self._fit = fit
        self._family = model.family
        self._param = parametrization
        self._head = model.head
        self._terms = tuple(model.terms)
        self._beta = fit.beta  # reference (multinomial) or per-output, (q, K')
        self._network = model.network  # folded (q, K) in the network's own parametrization
        self._x, self._y = model.x, model.y
        self._alpha = float(alpha)
        self._cov_type = cov_type
        self._dropped = model.dropped
        self._diagnostics = diagnostics
        self._warnings = tuple(warnings_)
        self._boot = bootstrap
        self._checks = tuple(checks)
        self._remedy = remedy
        self._all_classes = model.all_classes
        self._cache: dict = {}

    @property
    def _cov(self) -> np.ndarray:
        """The full covariance (reference / per-output layout), formed on first use."""
        return self._fit.covariance()

    # ------------------------------------------------------------ simple properties
    @property
    def family(self) -> str:
        """``"multinomial"``, ``"ovr"``, ``"binomial"`` or ``"gaussian"``."""
        return self._family

    @property
    def parametrization(self) -> str:
        return self._param

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def cov_type(self) -> str:
        return self._cov_type

    @property
    def head(self) -> Head:
        return self._head

    @property
    def model(self):
        """The :class:`~glminterp.refit.model.OutputLayerGLM` this result was fitted on."""
        return self._model

    @property
    def terms(self) -> tuple[str, ...]:
        """``"const"`` then the units kept."""
        return self._terms

    @property
    def units(self) -> tuple[str, ...]:
        return self._terms[1:]

    @property
    def classes(self) -> tuple[str, ...]:
        """Columns of :meth:`params` in the result's own parametrization."""
        return self._classes(self._param)

    @property
    def n_obs(self) -> int:
        return int(self._diagnostics.get("n_obs", self._x.shape[0]))

    @property
    def dropped_units(self) -> pd.DataFrame:
        """Units left out of the fit, with the reason (constant, collinear)."""
        return self._dropped.copy()

    @property
    def diagnostics(self) -> dict:
        """Pre-fit checks (JSON-serialisable): rank, condition number, EPP, overlap, separation."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._diagnostics.items()}

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every warning issued during the refit."""
        return self._warnings

    @property
    def results(self):
        """The fitted model objects.

        Maximum likelihood: statsmodels results (also with ``engine="fast"``), one
        ``MNLogitResults`` or a dict class -> ``GLMResults``. With a remedy, its own result
        objects (:class:`~glminterp.refit.firth.FirthResult`,
        :class:`~glminterp.refit.mnbr.MultinomialBRResult`,
        :class:`~glminterp.refit.penalized.RidgeResult`,
        :class:`~glminterp.refit.penalized.PCAResult`), one or a dict per output. Built on
        first access where the fit deferred them (the fast engine's multinomial optimum is
        handed to statsmodels then).
        """
        return self._fit.result_objects()

    @property
    def remedy(self) -> str | None:
        """The separation remedy used (e.g. ``"firth"``, ``"ridge"``, ``"pca"``) or None (MLE)."""
        return self._remedy

    @property
    def engine(self) -> str:
        """Which solver ran: ``"statsmodels"``, ``"fast"`` or ``"remedy:<name>"``."""
        return self._fit.engine

    @property
    def converged(self) -> bool:
        """True only if the fit was accepted as an optimum (see ``convergence_criterion``)."""
        return bool(self._fit.converged)

    @property
    def convergence_criterion(self) -> str:
        """The rule that accepted the fit (or why it is not an optimum)."""
        return self._fit.criterion

    @property
    def inference(self) -> str:
        """What the standard errors, tests and intervals are (printed beside them)."""
        return self._fit.inference

    @property
    def separated(self) -> bool:
        """True if any separation check found (quasi-)complete separation."""
        return any(c.separated for c in self._checks)

    @property
    def separation(self) -> pd.DataFrame:
        """The separation checks: one row per check (``"multinomial"``, or ``"binomial:
        <class>"`` per output): check, separated, classes (perfectly predicted), n_units and
        units (the separating direction's units, largest first), n_rows (rows strictly
        separated), objective (the LP optimum; 0 where a clean optimum proved overlap, see
        ``diagnostics["separation"][i]["method"]``).
        """
        cols = ["check", "separated", "classes", "n_units", "units", "n_rows", "objective"]
        rows = [
            {"check": c.label, "separated": bool(c.separated), "classes": ", ".join(c.classes),
             "n_units": len(c.units), "units": ", ".join(c.units),
             "n_rows": int(c.n_rows_separated), "objective": float(c.objective)}
            for c in self._checks
        ]
        return pd.DataFrame(rows, columns=cols)

    # ------------------------------------------------------------ parametrizations
    def _own(self, parametrization: str | None) -> str:
        p = self._param if parametrization is None else parametrization
        if p not in ("reference", "sum_to_zero"):
            raise ValueError(f"parametrization={p!r}; use 'reference', 'sum_to_zero' or None.")
        return p if self._family == "multinomial" else "per_output"

    def _classes(self, parametrization: str | None) -> tuple[str, ...]:
        own = self._own(parametrization)
        return self._all_classes[1:] if own == "reference" else self._all_classes

    def _index(self, parametrization: str | None) -> pd.MultiIndex:
        return pd.MultiIndex.from_product(
            [list(self._classes(parametrization)), list(self._terms)], names=["class", "term"]
        )

    def _beta_in(self, parametrization: str | None) -> np.ndarray:
        if self._own(parametrization) == "sum_to_zero":
            return to_sum_to_zero(np.hstack([np.zeros((len(self._terms), 1)), self._beta]))
        return self._beta

    def _cov_in(self, parametrization: str | None) -> np.ndarray:
        if self._own(parametrization) == "sum_to_zero":
            if "cov_stz" not in self._cache:
                self._cache["cov_stz"] = sum_to_zero_cov(
                    self._cov, len(self._all_classes), len(self._terms)
                )
            return self._cache["cov_stz"]
        return self._cov

    def _network_in(self, parametrization: str | None) -> np.ndarray:
        own = self._own(parametrization)
        if own == "reference":
            return to_reference(self._network)
        if own == "sum_to_zero":
            return to_sum_to_zero(self._network)
        return self._network

    def params(self, parametrization: str | None = None) -> pd.DataFrame:
        """Coefficients, index = terms, columns = classes (None: the result's own parametrization)."""
        return pd.DataFrame(
            self._beta_in(parametrization),
            index=pd.Index(self._terms, name="term"),
            columns=pd.Index(self._classes(parametrization), name="class"),
        )

    def cov_params(self, parametrization: str | None = None) -> pd.DataFrame:
        """Covariance of the coefficients, MultiIndex ``(class, term)`` on both axes."""
        idx = self._index(parametrization)
        return pd.DataFrame(self._cov_in(parametrization), index=idx, columns=idx)

    def class_cov(self, cls: str, parametrization: str | None = None) -> pd.DataFrame:
        """Terms x terms covariance of one class's coefficient vector."""
        classes = self._classes(parametrization)
        cls = str(cls)
        if cls not in classes:
            hint = (
                " (the baseline class has no coefficients in the reference parametrization; "
                "use parametrization='sum_to_zero')"
                if cls in self._all_classes
                else ""
            )
            raise KeyError(f"class {cls!r} not among {list(classes)}{hint}.")
        q = len(self._terms)
        j = classes.index(cls)
        block = self._cov_in(parametrization)[j * q : (j + 1) * q, j * q : (j + 1) * q]
        t = pd.Index(self._terms, name="term")
        return pd.DataFrame(block, index=t, columns=t)

    def network_params(self, parametrization: str | None = None) -> pd.DataFrame:
        """The network's head in the same layout as :meth:`params` (dropped units folded in)."""
        return pd.DataFrame(
            self._network_in(parametrization),
            index=pd.Index(self._terms, name="term"),
            columns=pd.Index(self._classes(parametrization), name="class"),
        )

    # ------------------------------------------------------------ tables
    @property
    def coefficients(self) -> pd.DataFrame:
        """Tidy table, one row per (class, term), in the result's own parametrization.

        Columns: class, term, coef, se, z, p, ci_lower, ci_upper (level 1 - alpha), p_holm,
        p_bh (the family is every unit coefficient of *this* table, intercepts excluded (NaN);
        see :meth:`coefficient_table` and :meth:`multiple_testing`), network_weight, z_network, p_network (Wald z of
        coef - network_weight), and with a bootstrap boot_se, boot_ci_lower, boot_ci_upper.
        """
        return self.coefficient_table(None)

    def coefficient_table(self, parametrization: str | None = None) -> pd.DataFrame:
        """The tidy :attr:`coefficients` table in any parametrization of the same fit.

        Multiple testing: ``p_holm`` (family-wise error) and ``p_bh`` (false discovery rate,
        valid under independence or positive dependence) are computed across the unit
        coefficients of the table returned, so the family changes with the parametrization
        (K - 1 reference contrasts per unit, or K linearly dependent sum-to-zero ones: BH is
        then outside its PRDS guarantee; use ``multiple_testing("fdr_by")``). The
        parametrization-invariant family is one joint test per unit: :attr:`unit_tests`
        (recommended for "which units matter").
        """
        key = f"coef:{self._own(parametrization)}"
        if key in self._cache:
            return self._cache[key].copy()
        own = self._own(parametrization) == self._own(None)
        b = self._beta_in(parametrization).ravel(order="F")
        se = self._se_in(parametrization)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = b / se
        zc = stats.norm.ppf(1 - self._alpha / 2)
        idx = self._index(parametrization)
        df = pd.DataFrame({
            "class": idx.get_level_values(0), "term": idx.get_level_values(1), "coef": b,
            "se": se, "z": z, "p": 2 * stats.norm.sf(np.abs(z)),
            "ci_lower": b - zc * se, "ci_upper": b + zc * se,
        })
        if own:
            self._own_inference(df)
        _adjust(df, (df["term"] != "const").to_numpy())
        net = self._network_in(parametrization).ravel(order="F")
        df["network_weight"] = net
        with np.errstate(divide="ignore", invalid="ignore"):
            zn = (b - net) / se
        comparable = self._network_comparable()
        df["z_network"] = zn if comparable else np.nan
        df["p_network"] = 2 * stats.norm.sf(np.abs(zn)) if comparable else np.nan
        if self._fit.labelled:
            df["inference"] = self.inference
        if self._boot is not None and len(self._boot["draws"]):
            draws = self._boot_draws(parametrization).reshape(len(self._boot["draws"]), -1,
                                                               order="F")
            df["boot_se"] = draws.std(axis=0, ddof=1)
            df["boot_ci_lower"] = np.quantile(draws, self._alpha / 2, axis=0)
            df["boot_ci_upper"] = np.quantile(draws, 1 - self._alpha / 2, axis=0)
        self._cache[key] = df
        return df.copy()

    def _se_in(self, parametrization: str | None) -> np.ndarray:
        """Hook: standard errors in the table's order (base: the covariance's diagonal, or
        the fit's own SEs in its own layout, which need no full covariance)."""
        if self._fit.se is not None and self._own(parametrization) != "sum_to_zero":
            return np.asarray(self._fit.se, dtype=np.float64)
        return np.sqrt(np.clip(np.diag(self._cov_in(parametrization)), 0, None))

    def _cov_sub(self, sel: np.ndarray) -> np.ndarray:
        """Hook: the covariance of the reference coefficients ``sel`` (flat, Fortran order)."""
        return self._cov[np.ix_(sel, sel)]

    def _own_inference(self, df: pd.DataFrame) -> None:
        """Hook: replace Wald columns by the estimator's own inference (fit's parametrization)."""

    def _network_comparable(self) -> bool:
        """Hook: is a Wald distance to the network's head a test for this estimator?"""
        return True

    def _boot_draws(self, parametrization: str | None) -> np.ndarray:
        d = self._boot["draws"]
        if self._own(parametrization) == "sum_to_zero":
            full = np.concatenate([np.zeros(d.shape[:2] + (1,)), d], axis=2)
            return full - full.mean(axis=2, keepdims=True)
        return d

    @property
    def summary(self) -> pd.DataFrame:
        """Coefficient table indexed by (class, term), the columns a reader needs first."""
        cols = ["coef", "se", "z", "p", "ci_lower", "ci_upper", "p_holm", "network_weight"]
        out = self.coefficients.set_index(["class", "term"])[cols]
        out.attrs["inference"] = self.inference
        if self._fit.labelled:  # printed beside every number of a penalized fit
            out["inference"] = self.inference
        return out

    @property
    def unit_tests(self) -> pd.DataFrame:
        """Joint Wald test per unit: does the unit matter for any class?

        For the multinomial the test uses the K - 1 reference contrasts (the hypothesis "all
        classes share the unit's weight" is the same in every parametrization); for per-output
        fits the unit's K coefficients with the covariance of :meth:`cov_params`. One test per
        unit is the recommended multiple-testing family (parametrization-invariant).
        Columns: unit, statistic, df, p, p_holm, p_bh. Computed on first access, then cached
        (a copy is returned).
        """
        if "unit_tests" not in self._cache:
            self._cache["unit_tests"] = self._unit_tests()
        return self._cache["unit_tests"].copy()

    def _unit_tests(self) -> pd.DataFrame:
        b = self._beta.ravel(order="F")
        q, k = len(self._terms), self._beta.shape[1]
        rows = []
        for j, unit in enumerate(self._terms[1:], start=1):
            sel = np.arange(k) * q + j
            stat, df = lk.wald(b[sel], self._cov_sub(sel))
            rows.append({"unit": unit, "statistic": stat, "df": df, "p": stats.chi2.sf(stat, df)})
        out = pd.DataFrame(rows, columns=["unit", "statistic", "df", "p"])
        if len(out):
            for col, method in ADJUSTMENTS:
                out[col] = lk.p_adjust(out["p"].to_numpy(), method)
        return out

    def multiple_testing(self, method: str = "fdr_by", family: str = "units",
                         parametrization: str | None = None) -> pd.DataFrame:
        """Adjusted p-values with an explicit family.

        Parameters
        ----------
        method : {"holm", "fdr_bh", "fdr_by"}
            Holm (family-wise error), Benjamini-Hochberg (FDR; independence or PRDS) or
            Benjamini-Yekutieli (FDR under arbitrary dependence, e.g. the linearly dependent
            sum-to-zero contrasts).
        family : {"units", "coefficients"}
            ``"units"``: one joint test per unit (:attr:`unit_tests`; the recommended,
            parametrization-invariant family). ``"coefficients"``: every unit coefficient of
            :meth:`coefficient_table` in ``parametrization``.

        Returns
        -------
        DataFrame
            The family's table with ``p_adjusted``, and ``family`` / ``method`` in ``attrs``.
        """
        if family == "units":
            out = self.unit_tests
        elif family == "coefficients":
            out = self.coefficient_table(parametrization)
            out = out[out["term"] != "const"].reset_index(drop=True)
        else:
            raise ValueError(f"family={family!r}; use 'units' or 'coefficients'.")
        p = out["p"].to_numpy()
        adj = np.full(p.shape, np.nan)
        ok = np.isfinite(p)
        adj[ok] = lk.p_adjust(p[ok], method)
        out["p_adjusted"] = adj
        out.attrs.update(family=family, method=method, n_tests=int(ok.sum()))
        return out

    def unit_lr_tests(self) -> pd.DataFrame:
        """Likelihood-ratio test per unit (maximum-likelihood logit fits only)."""
        raise ValueError(
            "unit_lr_tests needs a maximum-likelihood multinomial or binomial fit; "
            f"this result is family={self._family!r}, remedy={self._remedy!r}. Use "
            "unit_tests (Wald), or a penalized fit's own p-values in coefficients."
        )

    @property
    def agreement_test(self) -> dict:
        """Test of H0: the network's head equals the refit (on the held-out rows).

        Returns a dict with test, statistic, df, p_value, reject (at ``alpha``) and
        interpretation; statistic and p_value are None where the test is not defined.
        Computed on first access, then cached (a copy is returned).
        """
        if "agreement" not in self._cache:
            self._cache["agreement"] = self._agreement_test()
        return dict(self._cache["agreement"])

    def _agreement_test(self) -> dict:
        net = self._network_in("reference").ravel(order="F")
        if not np.isfinite(net).all():
            return {
                "statistic": None, "df": None, "p_value": None, "reject": None,
                "interpretation": "Not defined: the network's head is not the refitted model "
                f"({self._head.link} head, {self._family} refit).",
            }
        return self._agreement(net)

    def _wald_agreement(self, net: np.ndarray) -> tuple[float, int, float]:
        stat, df = lk.wald(self._beta.ravel(order="F") - net, self._cov)
        return stat, df, float(stats.chi2.sf(stat, df))

    def _agreement(self, net: np.ndarray) -> dict:
        """Hook: the agreement test this estimator's inference supports (base: Wald)."""
        stat, df, pval = self._wald_agreement(net)
        return _agreement_dict("Wald", stat, df, pval, self._alpha)

    # ------------------------------------------------------------ fit statistics
    @property
    def class_fit_stats(self) -> pd.DataFrame:
        """Fit statistics per output (per-output families) or one row ``"all"`` (multinomial)."""
        if self._family == "multinomial":
            return pd.DataFrame([self.fit_stats], index=pd.Index(["all"], name="class"))
        rows = {}
        for j, (c, s) in enumerate(zip(self._all_classes, self._fit.stats)):
            s = dict(s)
            s["lr_pvalue"] = (float(stats.chi2.sf(s["lr_statistic"], s["lr_df"]))
                              if s["lr_statistic"] is not None else None)
            s["mcfadden_r2"] = 1 - s["llf"] / s["llnull"] if s["llnull"] else float("nan")
            if self._family != "gaussian":
                s["events_per_parameter"] = dg.events_per_parameter(self._y[:, [j]],
                                                                    len(self.units))
            rows[c] = s
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")

    @property
    def fit_stats(self) -> dict:
        """Model fit, JSON-serialisable: llf, deviance, null deviance, LR test against the
        intercept-only model, AIC/BIC, McFadden R2, n_obs, n_params, events per parameter,
        ``converged`` (accepted as an optimum) and ``convergence_criterion`` (the rule).

        For per-output families the values are sums over the outputs (a joint likelihood that
        treats the outputs as independent; see :attr:`class_fit_stats` for each one).
        """
        out = {"family": self._family, **_sum_stats(self._fit.stats)}
        out["converged"] = bool(self._fit.converged)
        out["convergence_criterion"] = self._fit.criterion
        out["lr_pvalue"] = (float(stats.chi2.sf(out["lr_statistic"], out["lr_df"]))
                            if out["lr_statistic"] is not None else None)
        out["mcfadden_r2"] = (1 - out["llf"] / out["llnull"] if out["llnull"] is not None
                              and out["llnull"] else float("nan"))
        out["n_obs"] = self.n_obs
        out["n_units"] = len(self.units)
        out["events_per_parameter"] = float(self._diagnostics["events_per_parameter"])
        out["p_over_n"] = float(self._diagnostics.get("p_over_n", len(self.units) / self.n_obs))
        out["cov_type"] = self._cov_type
        out["engine"] = self.engine
        out["remedy"] = self._remedy
        return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in out.items()}

    # ------------------------------------------------------------ display
    def __repr__(self) -> str:
        fs = self.fit_stats
        return (
            f"{type(self).__name__}(family={self._family!r}, parametrization={self._param!r}, "
            f"n_obs={self.n_obs}, units={len(self.units)} (+{len(self._dropped)} dropped), "
            f"classes={len(self.classes)}, llf={fs['llf']:.6g}, cov_type={self._cov_type!r}, "
            f"engine={self.engine!r}, remedy={self._remedy!r}, warnings={len(self._warnings)})"
        )

    def _repr_html_(self) -> str:
        fs = self.fit_stats
        agree = self.agreement_test
        stats_tbl = pd.DataFrame([fs]).T.rename(columns={0: "value"}).to_html()
        top = self.coefficients
        top = top[top["term"] != "const"].reindex(
            top.loc[top["term"] != "const", "z"].abs().sort_values(ascending=False).index
        ).head(20)
        warn_html = "".join(f"<li>{html.escape(w)}</li>" for w in self._warnings)
        return (
            f"<div><h4>Refit of head {html.escape(self._head.name)!s} as a {self._family} GLM "
            f"({self._param}, cov_type={self._cov_type})</h4>"
            + (f"<p style='color:#a00'><b>{html.escape(self.inference)}</b></p>"
               if self._fit.labelled else "")
            + (f"<p><b>Warnings</b></p><ul>{warn_html}</ul>" if warn_html else "")
            + f"<p>Agreement with the network: {html.escape(agree['interpretation'])}</p>"
            + stats_tbl
            + "<p>Top 20 unit coefficients by |z|</p>"
            + top.to_html(index=False, float_format=lambda v: f"{v:.4g}")
            + "</div>"
        )


def _agreement_dict(test: str, stat: float, df: int, pval: float, alpha: float,
                    extra: dict | None = None) -> dict:
    reject = pval < alpha
    if reject:
        text = (
            f"Rejected at alpha={alpha:g} ({test} chi2={stat:.4g}, df={df}, p={pval:.3g}): the "
            "network's head differs from the maximum-likelihood fit on these rows. This is "
            "the usual outcome for a network trained with weight decay or early stopping (its "
            "head is shrunk, not the MLE) or on other rows; it says the head is not the MLE "
            "here, not that the network is wrong."
        )
    else:
        text = (
            f"Not rejected at alpha={alpha:g} ({test} chi2={stat:.4g}, df={df}, p={pval:.3g}): "
            "the rows are consistent with the network's head being the MLE. Not rejecting is "
            "not proof of equality; the power depends on the number of rows."
        )
    out = {"statistic": float(stat), "df": int(df), "p_value": float(pval),
           "reject": bool(reject), "interpretation": text, "test": test}
    out.update(extra or {})
    return out


class MLRefitResult(RefitResult):
    """Maximum-likelihood results: likelihood-ratio tests beside the Wald ones."""

    def _loglik(self, beta: np.ndarray) -> float:
        x, y = self._x, self._y
        if self._family == "multinomial":
            return lk.loglik_multinomial(x, y, beta)
        return sum(lk.loglik_binomial(x, y[:, o], beta[:, o]) for o in range(beta.shape[1]))

    def _agreement(self, net: np.ndarray) -> dict:
        """Likelihood ratio ``2 (l(beta_hat) - l(beta_net))`` (default), Wald beside it.

        The LR statistic is used with the model-based covariance of a logit fit; with a robust
        covariance (HC0, cluster) or the gaussian family the Wald test is the test.
        """
        w_stat, df, w_p = self._wald_agreement(net)
        wald = {"wald_statistic": float(w_stat), "wald_p_value": float(w_p)}
        if self._family == "gaussian" or self._cov_type != "nonrobust":
            return _agreement_dict("Wald", w_stat, df, w_p, self._alpha, wald)
        b_net = net.reshape(self._beta.shape, order="F")
        stat = max(0.0, 2.0 * (self._loglik(self._beta) - self._loglik(b_net)))
        pval = float(stats.chi2.sf(stat, df))
        return _agreement_dict("likelihood ratio", stat, df, pval, self._alpha, wald)

    def unit_lr_tests(self) -> pd.DataFrame:
        """Likelihood-ratio test per unit: refit without the unit and compare log-likelihoods.

        Preferred over the Wald :attr:`unit_tests` when p/N is not small (Wald tests are then
        miscalibrated; Sur & Candes 2019) or near separation (Hauck-Donner). Costs one refit per
        unit (started from the full fit's estimate without that unit), so it is computed on
        request and cached. The multinomial test has K - 1 degrees of freedom; per-output
        (binomial) fits add their statistics over the K outputs (df K). Gaussian fits and
        remedies (penalized likelihoods) are not supported.

        Returns
        -------
        DataFrame
            unit, statistic, df, p, p_holm, p_bh, converged (of the reduced fit; a reduced
            fit that does not converge gives NaN).
        """
        if self._family == "gaussian":
            return super().unit_lr_tests()
        if "unit_lr" in self._cache:
            return self._cache["unit_lr"].copy()
        from glminterp.refit.estimators.ml_statsmodels import all_good, reduced_fits

        x, y, b = self._x, self._y, self._beta
        multi = self._family == "multinomial"
        full = self._loglik(b)
        rows = []
        for j, unit in enumerate(self._terms[1:], start=1):
            xr, start = np.delete(x, j, axis=1), np.delete(b, j, axis=0)
            # the full fit's estimate without the unit is usually close to the reduced MLE;
            # with large coefficients it can overflow, then start from statsmodels' default
            fits = reduced_fits(multi, y, xr, start)
            if not all_good(fits):
                fits = reduced_fits(multi, y, xr, None)
            ok = all_good(fits)
            stat = 2.0 * (full - sum(float(r.llf) for r in fits)) if ok else np.nan
            df = b.shape[1]
            rows.append({"unit": unit, "statistic": max(stat, 0.0) if ok else np.nan, "df": df,
                         "p": stats.chi2.sf(stat, df) if ok else np.nan, "converged": ok})
            del fits
            gc.collect()  # statsmodels' IRLS keeps reference cycles alive between fits
        out = pd.DataFrame(rows, columns=["unit", "statistic", "df", "p", "converged"])
        _adjust(out, out["p"].notna().to_numpy())
        out = out[["unit", "statistic", "df", "p", "p_holm", "p_bh", "converged"]]
        self._cache["unit_lr"] = out
        return out.copy()


class FirthRefitResult(RefitResult):
    """Firth results: penalized likelihood-ratio p-values and profile intervals."""

    def _own_inference(self, df: pd.DataFrame) -> None:
        """Replace Wald p and CIs by PLR p and profile CIs (in place), keep Wald as p_wald."""
        tabs = self._fit.extras["table"]
        df["p_wald"] = df["p"].to_numpy()
        if not self._fit.extras.get("pl", True):
            return
        if self._own(None) == "sum_to_zero":  # 2 classes: gamma_1 = beta / 2 = -gamma_0
            t = tabs[0]
            lo, hi = t["ci_lower"].to_numpy() / 2, t["ci_upper"].to_numpy() / 2
            chi2 = np.tile(t["chi2_plr"].to_numpy(), 2)
            p = np.tile(t["p_plr"].to_numpy(), 2)
            lower, upper = np.concatenate([-hi, lo]), np.concatenate([-lo, hi])
        else:
            chi2 = np.concatenate([t["chi2_plr"].to_numpy() for t in tabs])
            p = np.concatenate([t["p_plr"].to_numpy() for t in tabs])
            lower = np.concatenate([t["ci_lower"].to_numpy() for t in tabs])
            upper = np.concatenate([t["ci_upper"].to_numpy() for t in tabs])
        df["chi2_plr"] = chi2
        df["p"] = p
        df["ci_lower"] = lower
        df["ci_upper"] = upper

    def _agreement(self, net: np.ndarray) -> dict:
        """Penalized LR test of H0: coefficients = the network's head (all of them fixed)."""
        q = len(self._terms)
        fits = self._fit.extras["fits"]
        stat = 0.0
        for j, fr in enumerate(fits):
            stat += 2.0 * (fr.pll - lk.firth_pll(self._x, fr._y, net[j * q : (j + 1) * q]))
        stat = max(stat, 0.0)
        df = q * len(fits)
        pval = float(stats.chi2.sf(stat, df))
        reject = pval < self._alpha
        verdict = "Rejected" if reject else "Not rejected"
        text = (
            f"{verdict} at alpha={self._alpha:g} (penalized LR chi2={stat:.4g}, df={df}, "
            f"p={pval:.3g}): penalized likelihood-ratio test of H0 'the network's head equals "
            "the coefficients' against the Firth-penalized fit (Jeffreys prior). Under "
            "separation the maximum-likelihood estimate does not exist, so this compares the "
            "head with the bias-reduced fit, not with an MLE; per-output statistics are summed "
            "as if the outputs were independent."
        )
        return {"statistic": float(stat), "df": df, "p_value": pval, "reject": bool(reject),
                "interpretation": text, "test": "penalized likelihood ratio (Firth)"}


class MultinomialBRRefitResult(RefitResult):
    """Multinomial mean bias reduction (brglm2 ``brmultinom``): Wald tables, penalized LR agreement.

    Coefficients, intervals and :attr:`unit_tests` are Wald, from the inverse Fisher information
    at the estimate (the base class's). The agreement test is the penalized likelihood ratio
    ``2 (l*(b_hat) - l*(b_net))`` with ``l* = l + 1/2 log det I`` (the estimate maximises
    ``l*``: the adjusted score of a canonical-link model is its gradient), the Wald statistic
    beside it; Wald alone where the information at the network's head is singular.
    """

    def _agreement(self, net: np.ndarray) -> dict:
        from glminterp.engine import FisherSingularError
        from glminterp.refit.mnbr import penalized_loglik

        w_stat, df, w_p = self._wald_agreement(net)
        wald = {"wald_statistic": float(w_stat), "wald_p_value": float(w_p)}
        k = len(self._all_classes)
        try:
            pll_net = penalized_loglik(self._x[:, 1:], self._y, k,
                                       net.reshape(self._beta.shape, order="F"))[0]
        except FisherSingularError:
            pll_net = float("nan")
        if not np.isfinite(pll_net):
            stat, pval, test = w_stat, w_p, "Wald (bias-reduced multinomial)"
            how = ("Wald test (the Fisher information at the network's head is singular, so "
                   "the penalized likelihood there is not defined)")
        else:
            stat = max(0.0, 2.0 * (self._fit.result_objects().pll - pll_net))
            pval = float(stats.chi2.sf(stat, df))
            test = "penalized likelihood ratio (multinomial bias reduction)"
            how = "penalized likelihood-ratio test (Jeffreys-prior penalized softmax likelihood)"
        reject = pval < self._alpha
        text = (
            f"{'Rejected' if reject else 'Not rejected'} at alpha={self._alpha:g} (chi2={stat:.4g}, "
            f"df={df}, p={pval:.3g}): {how} of H0 'the network's head equals the coefficients' "
            "against the bias-reduced fit of the same softmax model. Under separation the "
            "maximum-likelihood estimate does not exist, so this compares the head with the "
            "bias-reduced fit, not with an MLE."
        )
        return {"statistic": float(stat), "df": int(df), "p_value": float(pval),
                "reject": bool(reject), "interpretation": text, "test": test, **wald}


class PenalizedRefitResult(RefitResult):
    """Shrunken or reduced-rank estimates: no test against the network's head."""

    def _network_comparable(self) -> bool:
        # Not a test: the shrunken / reduced-rank estimate is not the MLE the network's
        # weights would be compared with (see agreement_test).
        return False

    def _agreement(self, net: np.ndarray) -> dict:
        what = self._fit.extras.get("not_comparable", "not the maximum-likelihood estimate")
        return {
            "statistic": None, "df": None, "p_value": None, "reject": None,
            "interpretation": f"Not defined for remedy={self._remedy!r}: the estimate is "
            f"{what}, so a Wald distance to the network's head is not a test of the "
            "maximum-likelihood fit (the network's weights are still listed beside the "
            "coefficients for comparison).",
        }

    @property
    def pca_loadings(self) -> pd.DataFrame | None:
        """Units x components loadings of ``remedy="pca"`` (unit-norm columns), else None."""
        lo = self._fit.extras.get("loadings")
        return None if lo is None else lo.copy()

    @property
    def pca_explained_variance(self) -> pd.Series | None:
        """Explained-variance ratio of each component kept by ``remedy="pca"``, else None."""
        ev = self._fit.extras.get("explained_variance_ratio")
        return None if ev is None else ev.copy()
