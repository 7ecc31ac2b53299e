"""Results of the estimators past the full covariance: chosen contrasts, class subset, one-vs-rest.

Each is a :class:`~glminterp.refit.results.RefitResult` (same tables, same names) changed only
where its inference differs, and each says what it is:

- :class:`ContrastRefitResult` (``method="contrasts"``): the tables hold the chosen
  coefficients / contrasts only, every row labelled; whatever needs the full covariance
  (``cov_params``, ``unit_tests``, other SEs) raises :class:`NotComputedError` naming why;
- :class:`ClassSubsetRefitResult` (``method="class_subset"``): the maximum-likelihood results of
  the conditional model on the rows of the class set, with pairwise class tests;
- :class:`OneVsRestRefitResult` (``method="ovr"``): per-class covariance blocks, a different
  model from the softmax head.

``fit_stats`` records the estimator and, with ``method="auto"``, why it was chosen.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from glminterp.refit import likelihood as lk
from glminterp.refit.results import MLRefitResult, RefitResult, _adjust, _agreement_dict

#: One-vs-rest results build the dense block-diagonal ``cov_params`` up to this many parameters.
DENSE_COV_MAX_PARAMS = 20_000


class NotComputedError(ValueError):
    """A quantity the estimator did not compute (e.g. the full covariance)."""


class ChoiceRecord:
    """Mixin: the estimator and the ``method="auto"`` choice in ``fit_stats``."""

    @property
    def estimator(self) -> str:
        """The estimator that produced the fit (``"ml"``, ``"contrasts"``, ...)."""
        return self._fit.extras.get("estimator", "ml")

    @property
    def fit_stats(self) -> dict:
        out = super().fit_stats
        out["estimator"] = self.estimator
        choice = self._fit.extras.get("choice")
        if choice:
            out["estimator_choice"] = choice["reason"]
        return out


def _rebase(diagnostics: dict, design, model) -> dict:
    """Diagnostics of the design actually fitted (subset rows / one-vs-rest view)."""
    checks = design.separation_checks()
    return {**diagnostics, "n_obs": design.n_obs, "n_obs_offered": model.n_obs,
            "n_units_used": len(design.units), "dropped_units": list(design.dropped["unit"]),
            "condition_number": float(design.condition_number),
            "events_per_parameter": float(design.events_per_parameter),
            "p_over_n": float(design.p_over_n),
            "separated": any(c.separated for c in checks),
            "separation": [c.to_dict() for c in checks]}


def contrast_frame(labels, keys, est: np.ndarray, cov: np.ndarray, alpha: float) -> pd.DataFrame:
    """contrast, class, term, coef, se, z, p, ci_lower, ci_upper of chosen contrasts."""
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    zc = stats.norm.ppf(1 - alpha / 2)
    return pd.DataFrame({"contrast": list(labels), "class": [k[0] for k in keys],
                         "term": [k[1] for k in keys], "coef": est, "se": se, "z": est / se,
                         "p": 2 * stats.norm.sf(np.abs(est / se)), "ci_lower": est - zc * se,
                         "ci_upper": est + zc * se})


class AutoMLRefitResult(ChoiceRecord, MLRefitResult):
    """``method="auto"`` that kept maximum likelihood with the full covariance.

    The contrasts / classes asked for are in :attr:`contrast_table` (from the full covariance),
    as :attr:`ContrastRefitResult.contrast_table` has them when the choice was ``"contrasts"``.
    """

    @property
    def contrast_table(self) -> pd.DataFrame | None:
        """The requested contrasts (None if none were requested)."""
        c = self._fit.extras.get("contrast_rows")
        if c is None:
            return None
        return contrast_frame(self._fit.extras["labels"], self._fit.extras["keys"],
                              c @ self._beta.ravel(order="F"), c @ self._cov @ c.T, self._alpha)


class ContrastRefitResult(ChoiceRecord, RefitResult):
    """Maximum likelihood with exact Wald SEs of the chosen coefficients / contrasts only.

    :meth:`params` holds every coefficient (the MLE); :attr:`coefficients` /
    :meth:`coefficient_table` / :attr:`summary` one row per chosen contrast (``class`` is
    ``"a"`` for ``w_a - w_baseline`` or ``"a - b"``), with an ``inference`` column saying that
    the other standard errors were not computed. :attr:`contrast_cov` is their covariance
    ``C I^-1 C'``; :meth:`wald_test` tests any of them jointly.
    """

    def _not_computed(self, what: str) -> NotComputedError:
        n, m = self._beta.size, len(self._fit.extras["labels"])
        return NotComputedError(
            f"{what} is not computed by method='contrasts': only the {m} chosen contrasts' "
            f"covariance C I^-1 C' was solved for (not the {n} x {n} inverse). Ask for the "
            "coefficients you need with contrasts=[(class, term), ...] / classes=[...], use "
            "contrast_cov and wald_test, or refit with method='ml' if the full covariance fits."
        )

    @property
    def not_computed(self) -> str:
        """What the tables leave out, in words."""
        n, m = self._beta.size, len(self._fit.extras["labels"])
        return (f"standard errors of the other {n - m} of {n} coefficients were not computed "
                "(method='contrasts')")

    def _rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        res = self._fit.result_objects()
        return res.contrasts, res.estimates, res.cov

    def coefficient_table(self, parametrization: str | None = None) -> pd.DataFrame:
        """The chosen contrasts: class, term, coef, se, z, p, CI, Holm/BH (across the chosen
        non-intercept rows), network_weight / z_network / p_network (the network's value of
        the same contrast), inference. Reference parametrization only (a sum-to-zero
        coefficient is itself a contrast: ask for it)."""
        if parametrization not in (None, "reference"):
            raise self._not_computed(f"parametrization={parametrization!r}")
        if "coef:contrasts" in self._cache:
            return self._cache["coef:contrasts"].copy()
        c, est, cov = self._rows()
        df = contrast_frame(self._fit.extras["labels"], self._fit.extras["keys"], est, cov,
                            self._alpha)
        se = df["se"].to_numpy()
        _adjust(df, (df["term"] != "const").to_numpy())
        net = c @ self._network_in("reference").ravel(order="F")
        df["network_weight"] = net
        zn = (est - net) / se
        df["z_network"] = zn
        df["p_network"] = 2 * stats.norm.sf(np.abs(zn))
        df["inference"] = self.inference
        df.attrs["not_computed"] = self.not_computed
        self._cache["coef:contrasts"] = df
        return df.copy()

    @property
    def summary(self) -> pd.DataFrame:
        out = super().summary
        out.attrs["not_computed"] = self.not_computed
        return out

    @property
    def contrast_table(self) -> pd.DataFrame:
        """The chosen contrasts (:meth:`coefficient_table`)."""
        return self.coefficient_table(None)

    @property
    def contrast_cov(self) -> pd.DataFrame:
        """``C I^-1 C'``: covariance of the chosen contrasts (labels on both axes)."""
        idx = pd.Index(self._fit.extras["labels"], name="contrast")
        return pd.DataFrame(self._rows()[2], index=idx, columns=idx)

    def wald_test(self, contrasts=None, value=None) -> dict:
        """Joint Wald test that the chosen ``contrasts`` (labels; default all) equal ``value``
        (default 0): statistic, df, p."""
        labels = list(self._fit.extras["labels"])
        sel = list(range(len(labels))) if contrasts is None else [
            labels.index(lab) if lab in labels else self._missing(lab) for lab in contrasts]
        _, est, cov = self._rows()
        d = est[sel] - (0.0 if value is None else np.asarray(value, dtype=np.float64))
        stat, df = lk.wald(d, cov[np.ix_(sel, sel)])
        return {"statistic": float(stat), "df": int(df), "p": float(stats.chi2.sf(stat, df))}

    def _missing(self, label):
        raise KeyError(f"contrast {label!r} was not computed; computed: "
                       f"{list(self._fit.extras['labels'])[:10]}.")

    def cov_params(self, parametrization: str | None = None) -> pd.DataFrame:
        raise self._not_computed("cov_params (the full covariance)")

    def class_cov(self, cls: str, parametrization: str | None = None) -> pd.DataFrame:
        raise self._not_computed(f"class_cov({cls!r})")

    @property
    def unit_tests(self) -> pd.DataFrame:
        raise self._not_computed("unit_tests (each needs a unit's K - 1 coefficients' covariance)")

    def _agreement(self, net: np.ndarray) -> dict:
        """Wald test that the chosen contrasts equal the network's (df = their number)."""
        c, est, cov = self._rows()
        stat, df = lk.wald(est - c @ net, cov)
        out = _agreement_dict("Wald", stat, df, float(stats.chi2.sf(stat, df)), self._alpha)
        out["interpretation"] += (f" Restricted to the {df} chosen contrasts (method="
                                  "'contrasts'): a test of those, not of the whole head.")
        out["test"] = "Wald (chosen contrasts)"
        return out

    @property
    def fit_stats(self) -> dict:
        out = super().fit_stats
        out["n_contrasts"] = len(self._fit.extras["labels"])
        out["not_computed"] = self.not_computed
        out.update({f"cg_{k}": v for k, v in self._fit.extras["convergence"].items()})
        return out


class ClassSubsetRefitResult(ChoiceRecord, MLRefitResult):
    """Maximum likelihood of the conditional model on the rows of a class subset ``S``.

    Every table is the usual one for that model: ``classes`` are the subset's (baseline
    first), ``n_obs`` its rows (``diagnostics["n_obs_offered"]``: rows offered), the
    network's head restricted to ``S``. :meth:`contrast` and :attr:`pairwise_tests` compare
    classes within ``S``.
    """

    def __init__(self, *, model, fit, diagnostics, checks=(), **kw) -> None:
        design = fit.extras["design"]
        diagnostics = {**_rebase(diagnostics, design, model),
                       "class_subset": list(design.all_classes)}
        super().__init__(model=design, fit=fit, diagnostics=diagnostics,
                         checks=design.separation_checks(), **kw)

    @property
    def class_subset(self) -> tuple[str, ...]:
        """The classes ``S`` (baseline first)."""
        return tuple(self._all_classes)

    def _selector(self, a: str, b: str) -> np.ndarray:
        q, cls = len(self._terms), list(self._all_classes)
        out = np.zeros((q, self._beta.size))
        for name, sign in ((str(a), 1.0), (str(b), -1.0)):
            if name not in cls:
                raise KeyError(f"class {name!r} is not in the subset {cls}.")
            k = cls.index(name)
            if k:
                out[:, (k - 1) * q : k * q] += sign * np.eye(q)
        return out

    def contrast(self, a: str, b: str) -> pd.DataFrame:
        """``w_a - w_b`` per term: coef, se, z, p, CI (Wald, conditional likelihood)."""
        c = self._selector(a, b)
        est = c @ self._beta.ravel(order="F")
        se = np.sqrt(np.einsum("ij,jk,ik->i", c, self._cov, c))
        zc = stats.norm.ppf(1 - self._alpha / 2)
        return pd.DataFrame({"coef": est, "se": se, "z": est / se,
                             "p": 2 * stats.norm.sf(np.abs(est / se)),
                             "ci_lower": est - zc * se, "ci_upper": est + zc * se},
                            index=pd.Index(self._terms, name="term"))

    @property
    def pairwise_tests(self) -> pd.DataFrame:
        """Joint Wald test of ``w_a = w_b`` on every unit, for each pair in ``S`` (Holm/BH)."""
        b, rows = self._beta.ravel(order="F"), []
        for a, c in combinations(self._all_classes, 2):
            sel = self._selector(a, c)[1:]
            stat, df = lk.wald(sel @ b, sel @ self._cov @ sel.T)
            rows.append({"class_a": a, "class_b": c, "statistic": stat, "df": df,
                         "p": stats.chi2.sf(stat, df)})
        out = pd.DataFrame(rows)
        _adjust(out, np.ones(len(out), dtype=bool))
        return out


class OneVsRestRefitResult(ChoiceRecord, RefitResult):
    """One-vs-rest logits (a different model from the softmax head), per-class blocks only.

    ``family`` is ``"ovr"``; cross-class covariances are not estimated (treated as 0 in
    :attr:`unit_tests` and the agreement test, as with per-output fits).
    """

    def __init__(self, *, model, fit, diagnostics, checks=(), **kw) -> None:
        design = fit.extras["design"]
        super().__init__(model=design, fit=fit, diagnostics=_rebase(diagnostics, design, model),
                         checks=design.separation_checks(), **kw)
        self._blocks = fit.extras["cov_blocks"]

    def _se_in(self, parametrization: str | None) -> np.ndarray:
        return np.sqrt(np.clip(np.einsum("kii->ki", self._blocks), 0, None)).ravel()

    def _cov_sub(self, sel: np.ndarray) -> np.ndarray:
        q = len(self._terms)
        cls, term = np.divmod(np.asarray(sel), q)
        same = cls[:, None] == cls[None, :]
        return np.where(same, self._blocks[cls[:, None], term[:, None], term[None, :]], 0.0)

    def cov_block(self, cls: str) -> pd.DataFrame:
        """Terms x terms covariance of one class's one-vs-rest coefficients."""
        return self.class_cov(cls)

    def class_cov(self, cls: str, parametrization: str | None = None) -> pd.DataFrame:
        names = list(self._all_classes)
        if str(cls) not in names:
            raise KeyError(f"class {cls!r} not among {names[:10]}.")
        t = pd.Index(self._terms, name="term")
        return pd.DataFrame(self._blocks[names.index(str(cls))], index=t, columns=t)

    def cov_params(self, parametrization: str | None = None) -> pd.DataFrame:
        """Block-diagonal covariance (zero across classes), up to ``DENSE_COV_MAX_PARAMS``."""
        n = self._beta.size
        if n > DENSE_COV_MAX_PARAMS:
            raise NotComputedError(
                f"cov_params would be a dense {n} x {n} matrix of per-class blocks; use "
                "class_cov(cls) for each class's block (cross-class covariances are not "
                "estimated by method='ovr').")
        idx = self._index(parametrization)
        return pd.DataFrame(self._cov_sub(np.arange(n)), index=idx, columns=idx)

    def _wald_agreement(self, net: np.ndarray) -> tuple[float, int, float]:
        d = (self._beta.ravel(order="F") - net).reshape(len(self._blocks), -1)
        stat = float(sum(di @ np.linalg.solve(b, di) for di, b in zip(d, self._blocks)))
        return stat, int(d.size), float(stats.chi2.sf(stat, d.size))
