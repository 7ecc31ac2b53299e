"""Validation of the refit's options: type and range, the argument named in every message."""

from __future__ import annotations

import numbers

FAMILIES: tuple[str, ...] = ("auto", "multinomial", "ovr", "binomial", "gaussian")
COV_TYPES: tuple[str, ...] = ("nonrobust", "HC0", "cluster")
REMEDIES: tuple[str | None, ...] = (None, "firth", "mnbr", "ridge", "pca")
ENGINES: tuple[str, ...] = ("auto", "statsmodels", "fast")
#: ``engine="auto"`` runs statsmodels' own optimizer (the reference) up to this many parameters
#: and the fast engine above; every fit is then accepted only at an optimum
#: (:mod:`glminterp.refit.acceptance`), and a fit statsmodels gets wrong is redone by the
#: damped Newton engine.
AUTO_ENGINE_MIN_PARAMS = 200


def check_choice(name: str, value, choices) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if not isinstance(value, (str, type(None))) or value not in choices:
        raise ValueError(f"{name}={value!r} is not known; use one of {tuple(choices)}.")


def check_int(name: str, value, *, minimum: int) -> int:
    """An integer (not bool, not a float) ``>= minimum``; returned as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_alpha(value) -> float:
    """A real number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"alpha must be a number in (0, 1), got {value!r} ({type(value).__name__}).")
    if not 0 < float(value) < 1:
        raise ValueError(f"alpha must be in (0, 1), got {value}.")
    return float(value)


def check_options(
    *, family, parametrization, cov_type, alpha, on_collinear, on_separation, remedy, bootstrap,
    engine, maxiter, seed=0, remedies=REMEDIES,
) -> None:
    """Validate every option of :func:`~glminterp.refit.refit_output_layer` before any work."""
    check_choice("remedy", remedy, remedies)
    check_choice("engine", engine, ENGINES)
    check_choice("family", family, FAMILIES)
    if parametrization not in ("reference", "sum_to_zero"):
        raise ValueError(
            f"parametrization={parametrization!r}; use 'reference' or 'sum_to_zero'."
        )
    if cov_type in ("HC1", "HC2", "HC3"):
        raise ValueError(
            f"cov_type={cov_type!r} is not offered: statsmodels 0.15 silently returns HC0 for "
            "GLM and MNLogit when asked for HC1-HC3. Use cov_type='HC0' (sandwich) or "
            "'cluster' (with cov_kwds={'groups': ...})."
        )
    check_choice("cov_type", cov_type, COV_TYPES)
    check_alpha(alpha)
    if on_collinear not in ("raise", "drop"):
        raise ValueError(f"on_collinear={on_collinear!r}; use 'raise' or 'drop'.")
    if on_separation not in ("raise", "warn"):
        raise ValueError(f"on_separation={on_separation!r}; use 'raise' or 'warn'.")
    check_int("bootstrap", bootstrap, minimum=0)
    check_int("maxiter", maxiter, minimum=1)
    check_int("seed", seed, minimum=0)
    if remedy is not None and cov_type != "nonrobust":
        raise ValueError(
            f"cov_type={cov_type!r} cannot be combined with remedy={remedy!r}: the remedy fixes "
            "its own covariance (Firth: inverse Fisher information at the penalized estimate; "
            "ridge: its sandwich; pca: inverse Fisher information of the component fit). "
            "Use cov_type='nonrobust'."
        )
    if remedy is not None and bootstrap:
        raise ValueError(
            f"bootstrap={bootstrap} cannot be combined with remedy={remedy!r}: the bootstrap "
            "refits the maximum-likelihood estimate only. Use bootstrap=0."
        )


def estimator_name(remedy, method, contrasts=None, classes=None) -> str:
    """The registered estimator a refit runs, from ``remedy`` / ``method`` / what is asked.

    ``method`` None means ``"ml"``, or ``"auto"`` when ``contrasts`` / ``classes`` are given;
    a remedy is its own estimator (give one of the two).
    """
    from glminterp.refit.estimators import REGISTRY, get_estimator

    if method is not None:
        check_choice("method", method, tuple(REGISTRY))
        if remedy is not None:
            raise ValueError(f"remedy={remedy!r} and method={method!r}: give one (a remedy is "
                             "its own estimator).")
    name = remedy or method or ("auto" if contrasts is not None or classes is not None
                                else "ml")
    wanted = {k for k, v in (("contrasts", contrasts), ("classes", classes)) if v is not None}
    if not wanted <= set(get_estimator(name).options):
        raise ValueError(f"{sorted(wanted)} are used by method='contrasts', 'class_subset' "
                         f"(classes) or 'auto', not {name!r}.")
    return name
