"""``refit_output_layer``: the one-call convenience over model + fit."""

from __future__ import annotations

from collections.abc import Sequence

from glminterp.refit.model import OutputLayerGLM
from glminterp.refit.options import check_options, estimator_name
from glminterp.refit.results import RefitResult


def refit_output_layer(
    acts, *, split: str | Sequence[str] | None = "refit", family: str = "auto",
    parametrization: str = "reference", cov_type: str = "nonrobust",
    cov_kwds: dict | None = None, alpha: float = 0.05, drop_dead: bool = True,
    on_collinear: str = "raise", bootstrap: int = 0, seed: int = 0, progress: bool = True,
    train_ids: Sequence[str] | None = None, on_separation: str = "raise",
    remedy: str | None = None, remedy_kwds: dict | None = None, engine: str = "auto",
    response=None, maxiter: int = 100, method: str | None = None, contrasts=None,
    classes=None,
) -> RefitResult:
    """Refit the network's output layer as a GLM on held-out rows.

    ``OutputLayerGLM.from_activations(acts, ...).fit(method, ...)`` in one call (see
    :class:`~glminterp.refit.model.OutputLayerGLM`); ``remedy`` names the estimator (None:
    maximum likelihood). Every option is validated before any work.

    Parameters
    ----------
    acts : Activations
        Exported activations with a detected head (``acts.head``) and labels.
    split : str, sequence of str or None
        Rows to use (``acts.obs["split"]``); None uses every row. The default ``"refit"`` is
        held out from training, which is what makes the inference valid.
    family : {"auto", "multinomial", "ovr", "binomial", "gaussian"}
        ``"auto"`` follows the head's link (softmax -> multinomial, sigmoid -> binomial per
        output, identity -> gaussian). ``"ovr"`` fits one binomial GLM per class.
    parametrization : {"reference", "sum_to_zero"}
        Default parametrization of the result (multinomial only; per-output families are
        identified as they are). ``"reference"``: class 0 is the baseline, columns are classes
        1..K-1 (statsmodels' MNLogit). ``"sum_to_zero"``: all K classes, ``w_k - mean_j w_j``.
    cov_type : {"nonrobust", "HC0", "cluster"}
        Model-based, sandwich, or cluster-robust covariance (statsmodels' own). HC1-HC3 are
        refused because statsmodels silently returns HC0 for them with these models.
    cov_kwds : dict, optional
        For ``"cluster"``: ``{"groups": obs column name | Series by sample id | per-row labels}``
        and optionally ``use_correction`` (statsmodels' small-sample factor, default True).
    alpha : float
        Level of the confidence intervals and of the agreement test's verdict.
    drop_dead : bool
        Drop constant (incl. all-zero) units, listed in ``dropped_units``. If False they make the
        design rank deficient and ``on_collinear`` applies.
    on_collinear : {"raise", "drop"}
        Exact collinearity among units: raise :class:`~glminterp.refit.diagnostics.CollinearityError`
        naming the dependent units, or drop them (recorded).
    bootstrap : int
        Number of nonparametric bootstrap replicates (rows, or clusters with
        ``cov_type="cluster"``) for percentile intervals; 0 for none.
    seed : int
        Seed of the bootstrap's ``numpy.random.Generator``.
    progress : bool
        Show progress bars (per-class fits, bootstrap).
    train_ids : sequence of str, optional
        Ids of the network's training rows, in addition to ``obs["split"] == "train"``.
    on_separation : {"raise", "warn"}
        Separated data raise :class:`~glminterp.refit.separation.SeparationError` (default) or, with
        ``"warn"``, are fitted anyway with a loud warning (the estimates are then meaningless).
    remedy : {None, "firth", "mnbr", "ridge", "pca"}
        A fit that exists under separation, used instead of the maximum-likelihood estimate
        (whether or not the data are separated; the separation check is recorded either way).
        ``"firth"``: Firth's bias reduction of the same model. Binomial / one-vs-rest heads and
        a 2-class softmax head (its multinomial model is the binomial logit of class 1 against
        class 0): Firth's logistic regression (:func:`glminterp.refit.firth.fit_firth`);
        ``.coefficients`` then holds the penalized-likelihood-ratio p-values (column ``p``, with
        Holm/BH on them) and profile penalized-likelihood intervals. A softmax head with more
        than 2 classes: the multinomial mean bias reduction of the softmax model (Kosmidis &
        Firth 2011, R ``brglm2::brmultinom(type="AS_mean")``:
        :func:`glminterp.refit.mnbr.fit_multinomial_br`), with Wald standard errors, tests and
        intervals from the inverse Fisher information at the estimate, joint Wald
        ``unit_tests`` (K - 1 df) and a penalized likelihood-ratio ``agreement_test``
        (:class:`~glminterp.refit.results.MultinomialBRRefitResult`). ``"mnbr"``: that
        multinomial bias reduction for any softmax head (with 2 classes the same estimate as
        ``"firth"``, Wald inference). ``"ridge"``: L2-penalized
        logit with a sandwich covariance (:func:`glminterp.refit.penalized.fit_ridge`), *penalized
        inference*. ``"pca"``: the GLM on the leading principal components of the units
        (:func:`glminterp.refit.penalized.fit_pca`), mapped back to unit coefficients; loadings in
        :attr:`PenalizedRefitResult.pca_loadings`. Not for the gaussian family.
    remedy_kwds : dict, optional
        ``"firth"``: ``pl`` (bool, default True: PLR tests and profile CIs; False: Wald;
        softmax heads with K > 2 are Wald only), ``tol``, ``max_iter``. ``"mnbr"``: ``tol``
        (largest Fisher-metric step, default 1e-8), ``max_iter`` (default 1000: the iteration
        converges linearly, more slowly as parameters / rows grow). ``"ridge"``: ``lam`` (default 1.0, on the summed log-likelihood
        scale), ``tol``, ``max_iter``. ``"pca"``: ``n_components`` (default: the fewest
        components explaining ``min_variance`` = 0.9 of the units' variance), ``scale``
        (standardise units first, default False).
    engine : {"auto", "statsmodels", "fast"}
        Maximum-likelihood solver (remedy None). ``"statsmodels"``: statsmodels' own Newton
        (MNLogit) / IRLS (GLM). ``"fast"``: :mod:`glminterp.engine` (stacked Fisher information,
        Newton-CG above 500 parameters), warm-started at the network's head when that beats the
        intercept-only start, then handed to statsmodels at the optimum
        (``EngineResult.to_statsmodels``), so the results objects, covariances (also HC0 and
        cluster) and tests are statsmodels' own. ``"auto"``: fast above
        ``AUTO_ENGINE_MIN_PARAMS`` (200) parameters. The gaussian family always uses
        statsmodels. Every fit is accepted only at an optimum (finite, vanishing score, llf >=
        intercept-only, positive definite information: :mod:`glminterp.refit.acceptance`);
        with ``"auto"`` a statsmodels fit that is not one (its IRLS has no step-halving) is
        redone by the fast engine's damped Newton. The accepting rule is
        ``fit_stats["convergence_criterion"]``. Which engine ran is in
        ``diagnostics["engine"]`` and ``fit_stats``.
    response : str, sequence of str, array or DataFrame, optional
        Gaussian family only: the response(s), one per output. Default: the label (one
        output) or its one-hot coding (several outputs).
    maxiter : int
        Newton / IRLS iterations (>= 1).
    method : {None, "ml", "auto", "contrasts", "class_subset", "ovr"} or a registered name
        The estimator when ``remedy`` is None (give one of the two). None: ``"ml"``, or
        ``"auto"`` when ``contrasts`` / ``classes`` are given. ``"auto"``: maximum likelihood
        with the full covariance while it fits in memory (checked before allocating); past
        that ``"contrasts"`` if ``contrasts`` / ``classes`` are given, ``"ovr"`` for
        per-output families, else a :class:`~glminterp.engine.CovarianceMemoryError` naming
        these options; the choice is recorded in ``fit_stats["estimator_choice"]``.
        ``"contrasts"``: the MLE with exact Wald SEs of the chosen coefficients / contrasts
        only, matrix-free (:class:`~glminterp.refit.results_partial.ContrastRefitResult`).
        ``"class_subset"``: the conditional multinomial logit on the rows whose class is in
        ``classes``, full inference in ``(p + 1)(|S| - 1)`` parameters
        (:class:`~glminterp.refit.results_partial.ClassSubsetRefitResult`). ``"ovr"``:
        one-vs-rest binomial logits with per-class covariance blocks only, a different model
        from a softmax head (:class:`~glminterp.refit.results_partial.OneVsRestRefitResult`;
        on ``family="ovr"`` the same model as ``"ml"``).
    contrasts : sequence, optional
        ``method="contrasts"`` / ``"auto"``: items ``(class, term)`` (that class's coefficient
        against the baseline, the head's first class) or ``(class_a, class_b, term)``
        (``w_a - w_b``); ``term`` is ``"const"`` or a unit name.
    classes : sequence, optional
        ``method="class_subset"``: the class set ``S``. ``"contrasts"`` / ``"auto"``: every
        coefficient of these classes.

    Returns
    -------
    RefitResult

    Raises
    ------
    SeparationError, CollinearityError, FitError, ValueError, TypeError
    """
    from glminterp.refit.estimators import remedy_names

    check_options(family=family, parametrization=parametrization, cov_type=cov_type,
                  alpha=alpha, on_collinear=on_collinear, on_separation=on_separation,
                  remedy=remedy, bootstrap=bootstrap, engine=engine, maxiter=maxiter,
                  seed=seed, remedies=remedy_names())
    name = estimator_name(remedy, method, contrasts, classes)
    model = OutputLayerGLM.from_activations(
        acts, split=split, family=family, drop_dead=drop_dead, on_collinear=on_collinear,
        train_ids=train_ids, response=response,
    )
    return model.fit(
        name, engine=engine, parametrization=parametrization,
        cov_type=cov_type, cov_kwds=cov_kwds, alpha=alpha, on_separation=on_separation,
        bootstrap=bootstrap, seed=seed, remedy_kwds=remedy_kwds, maxiter=maxiter,
        progress=progress, contrasts=contrasts, classes=classes,
    )
