"""The refit's model object: the design after every check, built once, fitted by any estimator.

``OutputLayerGLM.from_activations(acts, split="refit", family="auto", ...)`` selects the rows,
builds the response for the family, drops dead / collinear units (with reasons), records the
training overlap, the condition number and the events per parameter, and folds the network's
head onto the kept terms. ``model.fit(method=..., cov_type=...)`` runs one registered estimator
(:mod:`glminterp.refit.estimators`) and returns its results object. Separation is decided by
the fit where it can be (a clean optimum proves overlap) and by the linear program otherwise.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from glminterp.head import Head, to_reference
from glminterp.refit import design as ds
from glminterp.refit import diagnostics as dg
from glminterp.refit import likelihood as lk
from glminterp.refit import separation as sep
from glminterp.refit.errors import RefitWarning
from glminterp.refit.parametrize import fold_dropped_units

log = logging.getLogger("glminterp.refit")
#: Chord Newton steps (with the fit's inverse information) that tighten the dual bound.
_POLISH_STEPS = 3


def _select(acts, split):
    from glminterp.activations import Activations

    if not isinstance(acts, Activations):
        raise TypeError(f"acts must be an Activations object, got {type(acts).__name__}.")
    sub = acts if split is None else acts.subset(split=split)
    features = sub.head_features().astype(np.float64)
    if acts.head is None:  # head_features raised already; keeps type checkers informed
        raise ValueError("acts has no head.")
    if len(sub.obs) == 0:
        raise ValueError(f"split={split!r} selects no rows.")
    return sub, features


class OutputLayerGLM:
    """The network's output layer as a GLM design, checked and ready to fit.

    Build it with :meth:`from_activations`; fit it with :meth:`fit`. All attributes are
    read-only after construction.
    """

    def __init__(self) -> None:  # use from_activations
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self._checks: dict[int, sep.SeparationCheck] = {}

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, RefitWarning, stacklevel=5)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_activations(
        cls, acts, *, split: str | Sequence[str] | None = "refit", family: str = "auto",
        drop_dead: bool = True, on_collinear: str = "raise",
        train_ids: Sequence[str] | None = None, response=None,
    ) -> OutputLayerGLM:
        """Select rows, build the response, check the design (see the module docstring)."""
        from glminterp.refit.options import FAMILIES, check_choice

        check_choice("family", family, FAMILIES)
        if on_collinear not in ("raise", "drop"):
            raise ValueError(f"on_collinear={on_collinear!r}; use 'raise' or 'drop'.")
        self = cls()
        sub, features = _select(acts, split)
        self.head: Head = acts.head
        self.split = split if split is None or isinstance(split, str) else list(split)
        self.family = ds.resolve_family(family, self.head)
        self.obs = sub.obs
        self.y = ds.build_response(self.family, self.head, self.obs, response)
        self._check_overlap(acts, train_ids)
        self._check_units(features, drop_dead, on_collinear)
        self._check_conditioning()
        self._fold_network()
        return self

    def _check_overlap(self, acts, train_ids) -> None:
        self.overlap = dg.train_overlap(self.obs.index, acts.obs, train_ids)
        if self.overlap:
            self._warn(
                f"REFIT USES TRAINING ROWS: {len(self.overlap)} of {self.n_obs} rows (e.g. "
                f"{self.overlap[:3]}) were used to train the network. Coefficients fitted on "
                "training rows are biased away from zero and their standard errors, tests and "
                "intervals are not valid; refit on held-out rows (split='refit')."
            )

    def _check_units(self, features: pd.DataFrame, drop_dead: bool, on_collinear: str) -> None:
        self.all_units = [str(c) for c in features.columns]
        dead = dg.dead_units(features)
        rows, self.constant = [], {}
        if drop_dead and len(dead):
            self.constant = dict(zip(dead["unit"], dead["value"].astype(float)))
            features = features.drop(columns=list(self.constant))
            rows += [{"unit": u, "reason": r} for u, r in zip(dead["unit"], dead["reason"])]
            self.notes.append(f"dropped {len(self.constant)} constant unit(s): {list(self.constant)}")
        x1 = np.column_stack([np.ones(len(features)), features.to_numpy(dtype=np.float64)])
        # one QR for the rank and the condition number
        factor = dg.design_factor(features, x1=x1)
        self.rank = dg.rank_report(features, factor=factor)
        self._factor = factor if self.rank.full_rank else None
        self.dependencies: dict[str, dict[str, float]] = {}
        if not self.rank.full_rank:
            if on_collinear == "raise":
                raise dg.collinearity_error(self.rank)
            self.dependencies = {u: dict(c) for u, c in self.rank.dependencies.items()}
            features = features.drop(columns=list(self.rank.dependent))
            for u, combo in self.dependencies.items():
                expr = " + ".join(f"{a:.4g}*{t}" for t, a in combo.items())
                rows.append({"unit": u, "reason": f"collinear: {u} = {expr}"})
            self._warn(f"dropped {len(self.dependencies)} exactly collinear unit(s): "
                       f"{list(self.dependencies)}")
        self.dropped = pd.DataFrame(rows, columns=["unit", "reason"])
        self.features = features
        self.units = [str(c) for c in features.columns]
        self.terms = ("const", *self.units)
        self.x = x1 if self.rank.full_rank else np.column_stack(
            [np.ones(self.n_obs), features.to_numpy(dtype=np.float64)])

    def _check_conditioning(self) -> None:
        self.condition_number = dg.condition_number(self.features, factor=self._factor)
        if self.condition_number > dg.CONDITION_WARN:
            self._warn(
                f"condition number of the scaled design is {self.condition_number:.3g} (> "
                f"{dg.CONDITION_WARN:g}): near-collinear units; standard errors are inflated and "
                "individual coefficients are poorly determined."
            )
        p = len(self.units)
        gauss = self.family == "gaussian"  # no events; rows per unit is recorded instead
        self.events_per_parameter = (float(self.n_obs) / max(p, 1) if gauss
                                     else dg.events_per_parameter(self.y, p))
        self.p_over_n = p / max(self.n_obs, 1)
        high_dim = None if gauss else dg.high_dimension_note(p, self.n_obs)
        if high_dim:
            self._warn(high_dim)
        if not gauss and self.events_per_parameter < dg.EPP_WARN:
            self._warn(
                f"events per parameter is {self.events_per_parameter:.3g} (< {dg.EPP_WARN:g}): "
                "the MLE is biased away from zero and Wald tests can be miscalibrated at this "
                "p/N (Sur & Candes 2019); prefer fewer units or more held-out rows."
            )

    def _fold_network(self) -> None:
        net_full, note = ds.network_matrix(self.head, self.family)
        if note:
            self.notes.append(note)
        self.network, _ = fold_dropped_units(net_full, self.all_units, self.constant,
                                             self.dependencies)
        if self.constant or self.dependencies:
            self.notes.append("network weights of dropped units were folded into the kept terms")

    # ----------------------------------------------------------------- shape
    @property
    def n_obs(self) -> int:
        return int(len(self.obs))

    @property
    def n_classes(self) -> int:
        return int(self.head.n_outputs)

    @property
    def output_classes(self) -> tuple[str, ...]:
        return ds.output_classes(self.head)

    @property
    def all_classes(self) -> tuple[str, ...]:
        """Classes of the refit: the head's classes (multinomial) or its outputs."""
        return tuple(self.head.classes) if self.family == "multinomial" else self.output_classes

    @property
    def beta_columns(self) -> int:
        """Columns of the coefficient matrix: K - 1 (multinomial) or one per output."""
        return self.n_classes - 1 if self.family == "multinomial" else int(self.y.shape[1])

    @property
    def n_params(self) -> int:
        return len(self.terms) * self.beta_columns

    def require_logit(self, method: str) -> None:
        """Refuse the gaussian family for a logit-only estimator."""
        if self.family == "gaussian":
            raise ValueError(
                f"remedy={method!r} is for logit refits; the gaussian family has no separation. "
                "Use remedy=None."
            )

    def targets(self) -> list:
        """The likelihoods a maximum-likelihood fit maximises (one, or one per output)."""
        from glminterp.refit.estimators.ml import Target

        if self.family == "multinomial":
            null = lk.null_loglik_multinomial(self.y, self.n_classes)
            return [Target(0, "multinomial", "all", "multinomial", self.y, to_reference(self.network),
                           null)]
        kind = "gaussian" if self.family == "gaussian" else "binomial"
        return [
            Target(j, f"{self.family} ({c})", c, kind, self.y[:, j], self.network[:, j],
                   lk.null_loglik_binomial(self.y[:, j]) if kind == "binomial" else np.nan)
            for j, c in enumerate(self.output_classes)
        ]

    # ----------------------------------------------------------------- separation
    def checked(self, i: int) -> sep.SeparationCheck | None:
        """Target ``i``'s separation check if it has been decided, else None."""
        return self._checks.get(i)

    def _check_label(self, i: int) -> str:
        return "multinomial" if self.family == "multinomial" else f"binomial: {self.output_classes[i]}"

    def separation_check(self, i: int, progress: bool = False) -> sep.SeparationCheck:
        """The Konis linear program for target ``i`` (cached; logged because it can be slow).

        ``progress``: show a progress bar with the last phase's log line (the LP can take
        minutes at real sizes)."""
        if i not in self._checks or self._checks[i].method != "lp":
            t0 = time.perf_counter()
            log.info("separation check (%s): linear program on %d rows x %d terms",
                     self._check_label(i), self.n_obs, len(self.terms))
            bar = tqdm(desc=f"separation LP ({self._check_label(i)})", unit="step",
                       disable=not progress, leave=False)

            def step(msg: str) -> None:
                bar.set_postfix_str(msg, refresh=False)
                bar.update(1)

            try:
                if self.family == "multinomial":
                    c = sep.check_multinomial(self.x, self.y, terms=self.terms,
                                              classes=self.head.classes, progress=step)
                else:
                    cls = self.output_classes[i]
                    c = sep.check_binomial(self.x, self.y[:, i], terms=self.terms,
                                           label=self._check_label(i),
                                           classes=(f"not {cls}", cls), progress=step)
            finally:
                bar.close()
            log.info("separation check done in %.2f s", time.perf_counter() - t0)
            self._checks[i] = c
        return self._checks[i]

    def record_overlap(self, i: int, criterion: str, method: str = "fit",
                       bound: float | None = None) -> None:
        """Target ``i`` reached a clean optimum (``"fit"``) or has a dual certificate
        (``"dual"``, :meth:`certify_overlap`): overlap is proven without the LP."""
        if i not in self._checks:
            q = len(self.terms)
            shape = (q, self.beta_columns) if self.family == "multinomial" else (q,)
            self._checks[i] = sep.SeparationCheck(
                False, 0.0, (), (), 0, np.zeros(shape), self._check_label(i), method=method,
                bound=bound,
            )

    def certify_overlap(self, i: int, beta, cov=None) -> bool:
        """Prove overlap for target ``i`` from a (not clean) fit ``beta`` without the LP.

        The fitted probabilities bound the separation LP's optimum
        (:func:`~glminterp.refit.separation.lp_bound_multinomial`); a rigorous bound below the
        LP's separation threshold decides "no separation", as the LP would. The bound shrinks
        with the score, so with ``cov`` (the inverse information of the fit) up to
        ``_POLISH_STEPS`` chord Newton steps polish ``beta`` first (any point gives a valid
        bound; the steps only make it tighter). Returns True and records the check
        (``method="dual"``) if it decides; False leaves the LP to decide.
        """
        if i in self._checks:
            return not self._checks[i].separated
        beta = np.asarray(beta, dtype=np.float64)
        if not np.isfinite(beta).all():
            return False
        t0 = time.perf_counter()
        bound = np.inf
        for _ in range(1 + (_POLISH_STEPS if cov is not None else 0)):
            b, grad = self._lp_bound(i, beta)
            bound = min(bound, b)
            if (cov is None or sep.certifies_overlap(bound, self.n_obs)
                    or not np.isfinite(grad).all()):
                break
            beta = beta + (np.asarray(cov) @ grad.ravel(order="F")).reshape(beta.shape,
                                                                             order="F")
        ok = sep.certifies_overlap(bound, self.n_obs)
        log.info("separation check (%s): the fit's dual certificate bounds the LP optimum by "
                 "%.3g (%s) in %.2f s", self._check_label(i), bound,
                 "no separation: LP not needed" if ok else "not conclusive: LP",
                 time.perf_counter() - t0)
        if ok:
            self.record_overlap(i, "dual certificate", method="dual", bound=bound)
        return ok

    def _lp_bound(self, i: int, beta: np.ndarray) -> tuple[float, np.ndarray]:
        """The dual bound on target ``i``'s LP at ``beta``, and the score there."""
        from glminterp import engine as eng

        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            if self.family == "multinomial":
                _, grad, probs = eng.multinomial_loglike_grad_chunk(self.x[:, 1:], self.y, beta)
                _, lse = eng.multinomial_probs(self.x[:, 1:], beta)
                probs = np.column_stack([np.exp(-lse), probs])
                return sep.lp_bound_multinomial(self.x, self.y, probs), grad
            _, grad, mu = eng.binomial_loglike_grad_chunk(self.x[:, 1:], self.y[:, i], None, beta)
            return sep.lp_bound_binomial(self.x, self.y[:, i], mu), grad

    def n_targets(self) -> int:
        return 1 if self.family == "multinomial" else int(self.y.shape[1])

    def separation_checks(self, run: bool = False,
                          progress: bool = False) -> tuple[sep.SeparationCheck, ...]:
        """Checks of every target (``run``: run the LP for any not decided yet)."""
        if run:
            for i in range(self.n_targets()):
                if i not in self._checks:
                    self.separation_check(i, progress)
        return tuple(self._checks[i] for i in sorted(self._checks))

    def raise_separated(self, checks) -> None:
        """Raise :class:`SeparationError` with remedies that fit where the user is."""
        sep.raise_if_separated(checks, len(self.units), advice=sep.advice(self.split, self.family))

    def separation_warning(self, checks) -> str:
        msg = ("SEPARATED DATA, fitted anyway (on_separation='warn'): "
               + "; ".join(f"{c.label}: classes {list(c.classes)}" for c in checks)
               + ". The MLE does not exist; estimates and standard errors are meaningless.")
        return msg

    # ----------------------------------------------------------------- fitting
    def fit(self, method: str = "ml", **options):
        """Fit with a registered estimator; see :func:`glminterp.refit.fit.fit_model`."""
        from glminterp.refit.fit import fit_model

        return fit_model(self, method, **options)

    def __repr__(self) -> str:
        return (f"OutputLayerGLM(family={self.family!r}, n_obs={self.n_obs}, "
                f"units={len(self.units)} (+{len(self.dropped)} dropped), "
                f"classes={len(self.all_classes)})")
