"""Most discriminative and most confusing channels (Siddhartha 2022, arXiv 2205.11908).

For a class ``k`` and the final layer's weights ``w_k`` over the channels of the last feature map
(a global-average-pooling head):

1. Asymmetric-Laplace regression (:func:`ald_regression`): the positive weights sorted ascending
   are placed at rank fractions ``x_i = i / L`` (``i = 1..L``, ``L`` the number of positive
   weights) and ``log w`` is regressed on ``x`` by least squares; the same for the negated
   negative weights. ``R^2`` per side says how exponential each tail is.
2. Recursive split (:func:`recursive_split`): a channel set ``S`` is split by the sign of
   ``w[S] - mean(w[S])``; following the positive part repeatedly gives the "most
   discriminative" set, the negative part the "most confusing" set; a branch stops as soon as
   its set has fewer than ``min_size`` channels (that set is returned).
3. Each set's class map ``sum_{c in S} w_c A_c(x, y)`` is min-max normalised, upsampled to the
   input, multiplied into the input, and scored by the model's probability for ``k``
   (:func:`masked_probability`).

Additions: an exact maximum-likelihood fit of ``scipy.stats.laplace_asymmetric`` with a
Kolmogorov-Smirnov test whose p-value is calibrated by a seeded parametric bootstrap
(:func:`fit_ald`), and a GLM variant whose sets are the channels with significantly
positive / negative refit coefficients after a multiplicity correction (:func:`siddhartha`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from glminterp.head import detect_head
from glminterp.hooks import model_device
from glminterp.saliency._common import as_images, capture_layer, eval_mode, significant_units
from glminterp.saliency.occlusion import class_probabilities


# ------------------------------------------------------------------------------ regression
def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Slope, intercept and R^2 of the least-squares line of y on x."""
    xc, yc = x - x.mean(), y - y.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ yc) / sxx
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (intercept + slope * x)
    syy = float(yc @ yc)
    r2 = 1.0 - float(resid @ resid) / syy if syy > 0 else np.nan
    return slope, intercept, r2


def ald_regression(weights: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """Least-squares fit of log sorted weights on rank fraction, per sign.

    Parameters
    ----------
    weights : 1-D array
        One class's final-layer weights over the channels.

    Returns
    -------
    DataFrame
        Index ``side`` ("positive", "negative"); columns ``n, slope, intercept, r2``. The
        negative side uses ``-w`` for ``w < 0``. Sides with fewer than 2 weights are NaN.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite.")
    rows = {}
    for side, vals in (("positive", w[w > 0]), ("negative", -w[w < 0])):
        v = np.sort(vals)
        n = len(v)
        if n < 2:
            rows[side] = {"n": n, "slope": np.nan, "intercept": np.nan, "r2": np.nan}
            continue
        x = np.arange(1, n + 1) / n
        slope, intercept, r2 = _ols(x, np.log(v))
        rows[side] = {"n": n, "slope": slope, "intercept": intercept, "r2": r2}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "side"
    return out


# ------------------------------------------------------------------------------ split
@dataclass(frozen=True)
class ChannelSplit:
    """The recursive sign split of one class's weights.

    Attributes
    ----------
    discriminative, confusing : ndarray of int
        Channel indices of the final positive / negative leaves (ascending).
    path : DataFrame
        One row per set visited: ``branch``, ``depth``, ``size``, ``mean`` (of the weights in
        the set, the centre of the next split).
    min_size : int
    """

    discriminative: np.ndarray
    confusing: np.ndarray
    path: pd.DataFrame = field(repr=False)
    min_size: int


def recursive_split(
    weights: Sequence[float] | np.ndarray,
    *,
    min_size: int = 20,
    channels: Sequence[int] | None = None,
) -> ChannelSplit:
    """Split channels recursively by the sign of the centred weights (Siddhartha 2022).

    Starting from ``channels`` (default: all), a set ``S`` with ``|S| >= min_size`` is replaced
    by ``{c in S : w_c > mean(w[S])}`` on the discriminative branch and by
    ``{c in S : w_c < mean(w[S])}`` on the confusing branch; a set with ``|S| < min_size`` is a
    leaf. A split that would leave an empty set (all weights equal) also ends the branch.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if min_size < 1:
        raise ValueError(f"min_size must be positive, got {min_size}.")
    start = np.arange(len(w)) if channels is None else np.asarray(channels, dtype=int)
    if start.size == 0:
        raise ValueError("channels is empty.")
    path = [{"branch": "root", "depth": 0, "size": len(start), "mean": float(w[start].mean())}]
    leaves = {}
    for branch, sign in (("discriminative", 1.0), ("confusing", -1.0)):
        s, depth = start, 0
        while len(s) >= min_size:
            centred = w[s] - w[s].mean()
            nxt = s[sign * centred > 0]
            if nxt.size == 0:
                break
            s, depth = nxt, depth + 1
            path.append({"branch": branch, "depth": depth, "size": len(s), "mean": float(w[s].mean())})
        leaves[branch] = np.sort(s)
    return ChannelSplit(
        discriminative=leaves["discriminative"],
        confusing=leaves["confusing"],
        path=pd.DataFrame(path),
        min_size=int(min_size),
    )


# ------------------------------------------------------------------------------ ALD by MLE
@dataclass(frozen=True)
class ALDFit:
    """Maximum-likelihood asymmetric Laplace fit and its goodness of fit.

    Parameters follow ``scipy.stats.laplace_asymmetric(kappa, loc, scale)``.

    Attributes
    ----------
    kappa, loc, scale, loglik : float
    ks_statistic : float
        Kolmogorov-Smirnov distance between the weights and the fitted cdf.
    ks_pvalue_naive : float
        The textbook KS p-value, which ignores that the parameters were estimated from the same
        data (it is too large; do not use it as a test).
    ks_pvalue_bootstrap : float
        Parametric-bootstrap p-value: samples from the fitted law are refitted and their KS
        distances compared with the observed one, ``(1 + #{D* >= D}) / (B + 1)``.
    n_boot, seed, n : int
    aic, normal_aic : float
        AIC of the ALD (3 parameters) and of a normal fit (2 parameters), for comparison.
    """

    kappa: float
    loc: float
    scale: float
    loglik: float
    ks_statistic: float
    ks_pvalue_naive: float
    ks_pvalue_bootstrap: float
    n_boot: int
    seed: int
    n: int
    aic: float
    normal_aic: float

    @property
    def distribution(self):
        """The fitted frozen ``scipy.stats.laplace_asymmetric``."""
        return stats.laplace_asymmetric(self.kappa, loc=self.loc, scale=self.scale)

    @property
    def summary(self) -> pd.DataFrame:
        return pd.DataFrame([{k: getattr(self, k) for k in self.__dataclass_fields__}])


def ald_mle(x: np.ndarray) -> tuple[float, float, float]:
    """Exact MLE ``(kappa, loc, scale)`` of ``scipy.stats.laplace_asymmetric``.

    With ``a(m) = mean((x - m)+)`` and ``b(m) = mean((m - x)+)``, the likelihood profiled over
    kappa and scale is ``-n (2 log(sqrt a + sqrt b) + 1)`` with ``kappa = (b / a)^(1/4)`` and
    ``scale = kappa a + b / kappa``. ``sqrt a + sqrt b`` is concave between data points, so the
    best location is a sample point; all interior points are evaluated.
    """
    v = np.sort(np.asarray(x, dtype=np.float64).reshape(-1))
    n = len(v)
    if n < 3 or np.ptp(v) == 0:
        raise ValueError("The ALD fit needs at least 3 distinct values.")
    csum = np.concatenate([[0.0], np.cumsum(v)])  # csum[j] = sum of v[:j]
    j = np.arange(n)
    a = (csum[n] - csum[j + 1] - (n - j - 1) * v) / n
    b = (j * v - csum[j]) / n
    ok = (a > 0) & (b > 0)
    crit = np.where(ok, np.sqrt(np.clip(a, 0, None)) + np.sqrt(np.clip(b, 0, None)), np.inf)
    best = int(np.argmin(crit))
    kappa = (b[best] / a[best]) ** 0.25
    scale = kappa * a[best] + b[best] / kappa
    return float(kappa), float(v[best]), float(scale)


def fit_ald(
    weights: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 999,
    seed: int = 0,
    method: str = "exact",
) -> ALDFit:
    """Fit an asymmetric Laplace law to the weights by maximum likelihood and test the fit.

    Parameters
    ----------
    weights : 1-D array
    n_boot : int
        Parametric-bootstrap replicates for the KS p-value (0 skips it: NaN).
    seed : int
        Seeds a ``numpy.random.default_rng`` for the bootstrap.
    method : {"exact", "scipy"}
        ``"exact"``: :func:`ald_mle` (fast, the global maximum); ``"scipy"``:
        ``scipy.stats.laplace_asymmetric.fit`` (numerical; same answer up to optimiser
        tolerance, slower in the bootstrap).
    """
    if method not in ("exact", "scipy"):
        raise ValueError(f"method={method!r}; use 'exact' or 'scipy'.")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    fitter = ald_mle if method == "exact" else (lambda v: tuple(stats.laplace_asymmetric.fit(v)))
    kappa, loc, scale = fitter(w)
    dist = stats.laplace_asymmetric(kappa, loc=loc, scale=scale)
    ll = float(dist.logpdf(w).sum())
    ks = stats.kstest(w, dist.cdf)
    p_boot = np.nan
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        exceed = 0
        for _ in range(n_boot):
            sim = dist.rvs(size=len(w), random_state=rng)
            k2, l2, s2 = fitter(sim)
            d2 = stats.kstest(sim, stats.laplace_asymmetric(k2, loc=l2, scale=s2).cdf).statistic
            exceed += d2 >= ks.statistic
        p_boot = (1 + exceed) / (n_boot + 1)
    mu, sd = stats.norm.fit(w)
    normal_ll = float(stats.norm(mu, sd).logpdf(w).sum())
    return ALDFit(
        kappa=kappa,
        loc=loc,
        scale=scale,
        loglik=ll,
        ks_statistic=float(ks.statistic),
        ks_pvalue_naive=float(ks.pvalue),
        ks_pvalue_bootstrap=float(p_boot),
        n_boot=int(n_boot),
        seed=int(seed),
        n=len(w),
        aic=2 * 3 - 2 * ll,
        normal_aic=2 * 2 - 2 * normal_ll,
    )


# ------------------------------------------------------------------------------ maps
def restricted_class_map(
    maps: np.ndarray | torch.Tensor, weights: Sequence[float], channels: Sequence[int]
) -> np.ndarray:
    """``sum_{c in channels} w_c A_c(x, y)`` for maps ``(N, C, h, w)``; returns ``(N, h, w)``."""
    a = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    idx = np.asarray(channels, dtype=int)
    if a.ndim != 4 or a.shape[1] != len(w):
        raise ValueError(f"maps must be (N, {len(w)}, h, w), got {a.shape}.")
    return np.einsum("nchw,c->nhw", a[:, idx], w[idx])


def masked_probability(
    model: nn.Module,
    inputs: Any,
    cams: np.ndarray,
    cls: int,
    *,
    link: str | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Probability of ``cls`` when each input is multiplied by its normalised, upsampled map.

    Each map is min-max normalised to [0, 1] (a constant map becomes all ones, i.e. no
    masking), upsampled bilinearly to the input size, and multiplied into every channel.

    Returns
    -------
    ndarray, shape (N,)
    """
    images, _ = as_images(inputs)
    cam = torch.as_tensor(np.asarray(cams, dtype=np.float32))
    if cam.dim() != 3 or cam.shape[0] != images.shape[0]:
        raise ValueError(f"cams must be (N, h, w) with N = {images.shape[0]}, got {tuple(cam.shape)}.")
    lo = cam.amin(dim=(1, 2), keepdim=True)
    hi = cam.amax(dim=(1, 2), keepdim=True)
    rng = hi - lo
    norm = torch.where(rng > 0, (cam - lo) / torch.where(rng > 0, rng, 1), torch.ones_like(cam))
    up = F.interpolate(norm[:, None], size=images.shape[2:], mode="bilinear", align_corners=False)
    device = model_device(model)
    if link is None:
        link = detect_head(model, images[:1].to(device), input_hook=True).link
    out = []
    with eval_mode(model), torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = (images[s : s + batch_size] * up[s : s + batch_size]).to(device)
            out.append(class_probabilities(model(x), link)[:, cls].cpu().double())
    return torch.cat(out).numpy()


# ------------------------------------------------------------------------------ driver
@dataclass(frozen=True)
class SiddharthaResult:
    """Siddhartha (2022) for one class, with the GLM variant.

    Attributes
    ----------
    cls : int
    weights : ndarray, shape (C,)
        The network's final-layer weights for ``cls`` (its own parametrization).
    regression : DataFrame
        :func:`ald_regression`.
    ald : ALDFit or None
    split : ChannelSplit
    sets : dict of str to ndarray
        ``"all"``, ``"discriminative"``, ``"confusing"`` and, with a refit, ``"glm_positive"``
        and ``"glm_negative"`` (significant after correction).
    maps : dict of str to ndarray
        Restricted class maps ``(N, h, w)`` per set (network weights; only the channel
        selection differs between variants).
    scores : DataFrame
        One row per input, one column per set: the masked probability of ``cls`` (NaN for an
        empty set), plus ``unmasked``.
    """

    cls: int
    weights: np.ndarray = field(repr=False)
    regression: pd.DataFrame = field(repr=False)
    ald: ALDFit | None = field(repr=False)
    split: ChannelSplit = field(repr=False)
    sets: dict = field(repr=False)
    maps: dict = field(repr=False)
    scores: pd.DataFrame = field(repr=False)
    layer: str

    @property
    def summary(self) -> pd.DataFrame:
        """Per set: its size, the channels, and the mean masked probability with its SE."""
        rows = []
        for name in self.scores.columns:
            s = self.scores[name].to_numpy(dtype=np.float64)
            ch = self.sets.get(name)
            rows.append(
                {
                    "set": name,
                    "n_channels": np.nan if ch is None else len(ch),
                    "channels": "" if ch is None else " ".join(map(str, ch)),
                    "mean_score": np.nanmean(s) if np.isfinite(s).any() else np.nan,
                    "se_score": np.nanstd(s, ddof=1) / np.sqrt(np.isfinite(s).sum())
                    if np.isfinite(s).sum() > 1
                    else np.nan,
                }
            )
        return pd.DataFrame(rows).set_index("set")

    def compare(self, a: str = "discriminative", b: str = "glm_positive") -> pd.Series:
        """Paired comparison of two sets' scores: mean difference, its SE, and a paired t-test."""
        for name in (a, b):
            if name not in self.scores:
                raise KeyError(f"No scores for set {name!r}; sets: {list(self.scores.columns)}.")
        d = (self.scores[a] - self.scores[b]).to_numpy(dtype=np.float64)
        d = d[np.isfinite(d)]
        if len(d) < 2:
            return pd.Series({"n": len(d), "mean_diff": np.nan, "se": np.nan, "t": np.nan, "p": np.nan})
        se = d.std(ddof=1) / np.sqrt(len(d))
        t = d.mean() / se if se > 0 else np.nan
        p = 2 * stats.t.sf(abs(t), df=len(d) - 1) if np.isfinite(t) else np.nan
        return pd.Series({"n": len(d), "mean_diff": d.mean(), "se": se, "t": t, "p": p})

    def _repr_html_(self) -> str:
        return self.regression.to_html() + self.summary.to_html(float_format=lambda v: f"{v:.4g}")


def siddhartha(
    model: nn.Module,
    inputs: Any,
    cls: int,
    *,
    layer: str | None = None,
    min_size: int = 20,
    refit: Any = None,
    alpha: float = 0.05,
    correction: str = "holm",
    n_boot: int = 199,
    seed: int = 0,
    batch_size: int = 256,
) -> SiddharthaResult:
    """Run Siddhartha's analysis for class ``cls`` on ``inputs`` (and the GLM variant).

    Parameters
    ----------
    model : nn.Module
        A network whose head is a Linear layer on the global average of a conv map.
    inputs : Tensor (N, C, H, W) or LabeledImages
        Images to score (typically of class ``cls``).
    cls : int
        Output index of the class.
    layer : str, optional
        The map the head averages (default: the detected head's input layer).
    min_size : int
        Leaf size of :func:`recursive_split`.
    refit : RefitResult or its coefficients DataFrame, optional
        Adds the sets of significantly positive / negative coefficients for ``cls``.
    alpha, correction : significance level and correction ("holm", "bh", "none").
    n_boot, seed : bootstrap of :func:`fit_ald` (``n_boot=0`` skips the MLE fit's bootstrap).
    batch_size : int
    """
    images, _ = as_images(inputs)
    device = model_device(model)
    head = detect_head(model, images[:1].to(device), input_hook=True)
    if layer is None:
        if not head.gap:
            raise ValueError(
                "The head is not a Linear on globally averaged maps; pass layer=<conv map> "
                "whose channels are the head's inputs."
            )
        layer = head.input_layer
    if not 0 <= int(cls) < head.n_outputs:
        raise ValueError(f"cls must lie in 0..{head.n_outputs - 1}, got {cls}.")
    w = head.weight[int(cls)]
    with eval_mode(model), torch.inference_mode():
        maps = torch.cat(
            [capture_layer(model, images[s : s + batch_size].to(device), layer).cpu()
             for s in range(0, len(images), batch_size)]
        ).double().numpy()
    if maps.ndim != 4 or maps.shape[1] != len(w):
        raise ValueError(f"Layer {layer!r} gives maps {maps.shape}; the head has {len(w)} inputs.")
    split = recursive_split(w, min_size=min_size)
    sets = {
        "all": np.arange(len(w)),
        "discriminative": split.discriminative,
        "confusing": split.confusing,
    }
    if refit is not None:
        label = head.classes[int(cls)]
        pos, neg = significant_units(refit, label, alpha=alpha, correction=correction)
        sets["glm_positive"], sets["glm_negative"] = np.sort(pos), np.sort(neg)
    class_maps, scores = {}, {}
    for name, ch in sets.items():
        class_maps[name] = restricted_class_map(maps, w, ch)
        if len(ch) == 0:
            scores[name] = np.full(len(images), np.nan)
        else:
            scores[name] = masked_probability(
                model, images, class_maps[name], int(cls), link=head.link, batch_size=batch_size
            )
    with eval_mode(model), torch.inference_mode():
        base = torch.cat(
            [class_probabilities(model(images[s : s + batch_size].to(device)), head.link)[:, int(cls)].cpu()
             for s in range(0, len(images), batch_size)]
        )
    scores["unmasked"] = base.double().numpy()
    ald = fit_ald(w, n_boot=n_boot, seed=seed) if len(w) >= 3 and np.ptp(w) > 0 else None
    return SiddharthaResult(
        cls=int(cls),
        weights=w,
        regression=ald_regression(w),
        ald=ald,
        split=split,
        sets=sets,
        maps=class_maps,
        scores=pd.DataFrame(scores),
        layer=layer,
    )
