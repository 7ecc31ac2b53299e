"""Class activation maps cross-referenced with the GLM refit of the head.

For a global-average-pooling head the class score is ``b_c + sum_k w_ck mean_xy A_k(x, y)``, so
the class activation map ``M_c(x, y) = sum_k w_ck A_k(x, y)`` (Zhou et al. 2016) is the head's
linear predictor spread over space. :func:`class_activation_maps` builds it from the network's
own weights or from GLM coefficients (a :class:`~glminterp.refit.RefitResult` or plain arrays);
with a covariance every location gets a standard error, a z value and significance masks.
Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhyay et al. 2018) cover conv layers
without a GAP head.

Conventions (all selectable, recorded on the result)
----------------------------------------------------
Parametrization
    Softmax heads are identified only up to a common shift of the class weights, so a map from
    coefficients is a class *contrast*: ``"sum_to_zero"`` (default for CAM) maps
    ``gamma_c = w_c - mean_j w_j``, i.e. ``M_c - mean_j M_j``; ``"reference"`` maps
    ``w_c - w_0`` (no map for the baseline class 0); ``"network"`` maps the raw weights
    (Zhou's CAM, what torchcam computes). Sigmoid and identity heads are identified: every
    parametrization is the raw weights. Grad-CAM differentiates the matching score
    (``y_c``, ``y_c - mean_j y_j`` or ``y_c - y_0``); its default is ``"network"``.
Intercept share
    ``intercept="exclude"`` (default, Zhou and torchcam) leaves the bias out. ``"spread"`` adds
    ``b_c`` at every location, so the map's spatial *mean* equals the linear predictor
    ``eta_c``. On this (mean) scale the intercept's share per location is 1; on the sum scale
    (map / (H*W), which sums to ``eta_c``) it is ``1/(H*W)``. The SE uses the same share:
    ``a(x, y) = [share, A_1(x, y), ..., A_p(x, y)]``.
Display
    ``maps`` = optional ReLU, then optional min-max to [0, 1] per image and class
    (``(M - min) / (max - min + 1e-8)``, torchcam's formula), then bilinear upsampling to the
    input size (``align_corners=False``). Normalising before upsampling follows Zhou's code,
    pytorch-grad-cam and torchcam's metrics. ReLU defaults to off for CAM (Zhou, torchcam's CAM)
    and on for Grad-CAM(++) (the papers, torchcam, pytorch-grad-cam).
Statistics
    ``raw`` is the linear map (no ReLU, no normalisation), upsampled when ``upsample=True``.
    Bilinear upsampling is linear, so the SE of the upsampled map is computed exactly, not by
    interpolating SEs: each output pixel combines at most 2 x 2 feature cells, and
    ``SE^2(u) = sum_ij w_i(u) w_j(u) a_i' Sigma_c a_j`` is assembled from inner products of
    neighbouring cells (see :mod:`glminterp.maps.cam_uncertainty`). ``z = raw / SE``; the
    pointwise mask is ``|z| > z_{1-alpha/2}``. The simultaneous band is ``raw +- t * band_se``
    and its mask ``|raw| > t * band_se``. With ``band="cells"`` (default) ``t`` is the
    ``(1 - alpha)`` quantile of ``max_c |z*_c|`` over the ``h x w`` feature cells, where
    ``z*_c = a_c'(beta* - beta_hat) / SE_c`` and ``beta* ~ N(beta_hat, Sigma_c)`` (seeded
    draws, shared by all images of a class, simulated in the cells' ``h w``-dimensional space),
    and ``band_se`` interpolates the cell SEs: interpolation weights are non-negative and sum
    to one, so a band that holds at every cell holds at every pixel (simultaneous over the
    upsampled map, conservative between cells, cost independent of ``p`` and of the output
    size). With ``band="pixels"`` ``t`` is the quantile of ``max |z*|`` over the returned
    grid's pixels with their exact SEs (``band_se = se``); only the draws that can reach the
    quantile's order statistics are upsampled and maximised exactly (same quantile, see
    :mod:`glminterp.maps.cam_uncertainty`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests
from torch import nn

from glminterp._validate import check_int, check_real
from glminterp.activations import unit_names
from glminterp.data import LabeledImages
from glminterp.head import Head, HeadError, detect_head
from glminterp.hooks import (
    ActivationRecorder,
    ReusedModuleError,
    model_device,
    model_guard,
    parse_layer,
    resolve_layers,
    reuse_message,
)
from glminterp.maps.cam_uncertainty import BANDS, interp_matrix, uncertainty

METHODS: tuple[str, ...] = ("cam", "gradcam", "gradcam++")
NORMALIZE: tuple[str | None, ...] = ("minmax", None)
INTERCEPT: tuple[str, ...] = ("exclude", "spread")
CORRECTIONS: dict[str, str] = {"holm": "p_holm", "bh": "p_bh"}
GRADCAMPP_ALPHA: tuple[str, ...] = ("paper", "torchcam")
_EPS_NORM = 1e-8
_EPS_PP = 1e-8


# ------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class CAMCoefficients:
    """GLM coefficients for a CAM, in one parametrization.

    Attributes
    ----------
    params : ndarray, shape (p + 1, K')
        Intercept in row 0, one column per class of ``classes``.
    classes : tuple of str
    parametrization : str
    class_covs : ndarray, shape (K', p + 1, p + 1), or None
        Covariance of each class's coefficient vector (intercept first).
    source : str
        ``"network"`` (the head's weights), ``"refit"`` (a RefitResult) or ``"arrays"``.
    table : DataFrame or None
        The refit's tidy coefficient table when it is in this parametrization (its corrected
        p-values and CIs are then used as they are).
    """

    params: np.ndarray
    classes: tuple[str, ...]
    parametrization: str
    class_covs: np.ndarray | None = field(default=None, repr=False)
    source: str = "arrays"
    table: pd.DataFrame | None = field(default=None, repr=False)


def _head_classes(head: Head, parametrization: str) -> tuple[str, ...]:
    if head.link == "softmax" and parametrization == "reference":
        return tuple(head.classes[1:])
    return tuple(head.classes)


def _check_parametrization(parametrization: str) -> None:
    if parametrization not in ("reference", "sum_to_zero", "network"):
        raise ValueError(
            f"parametrization={parametrization!r}; use 'sum_to_zero', 'reference' or 'network'."
        )


def resolve_coefficients(
    coefficients: Any, head: Head, layer: str, n_channels: int, parametrization: str
) -> CAMCoefficients:
    """Normalise ``coefficients`` to a :class:`CAMCoefficients` over all ``n_channels``.

    Parameters
    ----------
    coefficients : None, RefitResult, CAMCoefficients, ndarray or (ndarray, ndarray) tuple
        None: the network's head in ``parametrization``. A RefitResult: ``params`` and
        ``class_cov`` in ``parametrization`` (units the refit dropped as dead get coefficient 0
        and variance 0). An array ``(p + 1, K')`` (optionally with covariances
        ``(K', p + 1, p + 1)``) is taken to be in ``parametrization``; ``K'`` must be ``K`` or,
        for the reference parametrization, ``K - 1``.
    head : Head
    layer : str
        The CAM layer (the head's GAP input layer); names the refit's terms.
    n_channels : int
    parametrization : str
    """
    k_cls = _head_classes(head, parametrization)
    if coefficients is None:
        return CAMCoefficients(
            params=head.params(parametrization), classes=k_cls, parametrization=parametrization,
            source="network",
        )
    if isinstance(coefficients, CAMCoefficients):
        if coefficients.parametrization != parametrization:
            raise ValueError(
                f"coefficients are in the {coefficients.parametrization!r} parametrization but "
                f"parametrization={parametrization!r}; pass the matching parametrization."
            )
        _check_shapes(coefficients.params, coefficients.class_covs, n_channels)
        return coefficients
    if hasattr(coefficients, "params") and hasattr(coefficients, "class_cov"):
        return _from_refit(coefficients, layer, n_channels, parametrization)
    if isinstance(coefficients, tuple) and len(coefficients) == 2:
        params, covs = coefficients
    else:
        params, covs = coefficients, None
    params = np.asarray(params, dtype=np.float64)
    covs = None if covs is None else np.asarray(covs, dtype=np.float64)
    _check_shapes(params, covs, n_channels)
    if params.shape[1] == len(k_cls):
        classes = k_cls
    else:
        raise ValueError(
            f"coefficients have {params.shape[1]} columns but the head's {parametrization!r} "
            f"parametrization has {len(k_cls)} classes {k_cls}; pass parametrization= to match."
        )
    return CAMCoefficients(params, classes, parametrization, covs, "arrays")


def _check_shapes(params: np.ndarray, covs: np.ndarray | None, n_channels: int) -> None:
    if params.ndim != 2 or params.shape[0] != n_channels + 1:
        raise ValueError(
            f"coefficients must be a (p + 1, K') matrix with p = {n_channels} channels and the "
            f"intercept in row 0; got shape {params.shape}."
        )
    if covs is not None and covs.shape != (params.shape[1], n_channels + 1, n_channels + 1):
        raise ValueError(
            f"covariances must have shape (K', p + 1, p + 1) = "
            f"{(params.shape[1], n_channels + 1, n_channels + 1)}; got {covs.shape}."
        )


def _from_refit(res: Any, layer: str, n_channels: int, parametrization: str) -> CAMCoefficients:
    if parametrization == "network":
        raise ValueError(
            "A refit has no 'network' parametrization; use 'sum_to_zero' or 'reference'."
        )
    params_df = res.params(parametrization)
    terms = [str(t) for t in params_df.index]
    names = unit_names(layer, n_channels, conv=True)
    pos = {n: i + 1 for i, n in enumerate(names)}
    if not terms or terms[0] != "const":
        raise ValueError(f"The refit's terms must start with 'const'; got {terms[:3]}.")
    unknown = [t for t in terms[1:] if t not in pos]
    if unknown:
        raise KeyError(
            f"Refit terms {unknown[:3]} are not channels of layer {layer!r} (expected names like "
            f"{names[0]!r}); refit the activations of the CAM layer."
        )
    idx = np.array([0] + [pos[t] for t in terms[1:]])
    classes = tuple(str(c) for c in params_df.columns)
    params = np.zeros((n_channels + 1, len(classes)))
    params[idx] = params_df.to_numpy(np.float64)
    covs = np.zeros((len(classes), n_channels + 1, n_channels + 1))
    for j, c in enumerate(params_df.columns):
        cov = res.class_cov(c, parametrization).loc[terms, terms].to_numpy(np.float64)
        covs[j][np.ix_(idx, idx)] = cov
    table = None
    if getattr(res, "parametrization", None) == parametrization:
        table = res.coefficients.copy()
        table["class"] = table["class"].astype(str)
    return CAMCoefficients(params, classes, parametrization, covs, "refit", table)


def coefficient_table(coefs: CAMCoefficients, layer: str, alpha: float) -> pd.DataFrame:
    """Wald table of the CAM's coefficients: one row per (class, channel).

    Columns ``class, channel, term, coef, se, z, p, ci_lower, ci_upper, p_holm, p_bh``. Holm and
    Benjamini-Hochberg corrections run over all unit coefficients of all classes (intercepts and
    dropped units excluded), the refit's convention. When the coefficients come from a refit in
    the same parametrization, its p-values and CIs are used as they are.
    """
    if coefs.class_covs is None:
        raise ValueError(
            "These coefficients have no covariance; pass a RefitResult or (params, covariances)."
        )
    n_ch = coefs.params.shape[0] - 1
    names = unit_names(layer, n_ch, conv=True)
    rows = []
    crit = stats.norm.ppf(1 - alpha / 2)
    for j, c in enumerate(coefs.classes):
        se = np.sqrt(np.clip(np.diag(coefs.class_covs[j])[1:], 0, None))
        b = coefs.params[1:, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, b / se, np.nan)
        rows.append(
            pd.DataFrame(
                {
                    "class": c, "channel": np.arange(n_ch), "term": names, "coef": b, "se": se,
                    "z": z, "p": 2 * stats.norm.sf(np.abs(z)),
                    "ci_lower": np.where(se > 0, b - crit * se, np.nan),
                    "ci_upper": np.where(se > 0, b + crit * se, np.nan),
                }
            )
        )
    tab = pd.concat(rows, ignore_index=True)
    tab["p_holm"] = np.nan
    tab["p_bh"] = np.nan
    ok = tab["p"].notna().to_numpy()
    if ok.any():
        tab.loc[ok, "p_holm"] = multipletests(tab.loc[ok, "p"], method="holm")[1]
        tab.loc[ok, "p_bh"] = multipletests(tab.loc[ok, "p"], method="fdr_bh")[1]
    if coefs.table is not None:
        ref = coefs.table.set_index(["class", "term"])
        cols = ["p", "ci_lower", "ci_upper", "p_holm", "p_bh"]
        key = pd.MultiIndex.from_arrays([tab["class"], tab["term"]])
        found = key.isin(ref.index)
        tab.loc[found, cols] = ref.loc[key[found], cols].to_numpy()
    return tab


# ---------------------------------------------------------------------------- computation
def _as_tensor(inputs: Any) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    if isinstance(inputs, LabeledImages):
        return inputs.images, tuple(str(i) for i in inputs.ids)
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() != 4:
            raise ValueError(f"inputs must be (N, C, H, W); got shape {tuple(inputs.shape)}.")
        return inputs, None
    raise TypeError(f"inputs must be a Tensor or LabeledImages; got {type(inputs).__name__}.")



def _select_classes(classes: Any, available: tuple[str, ...], all_labels: tuple[str, ...]) -> list[int]:
    """Positions in ``available`` of the requested classes (labels or output indices)."""
    if classes is None:
        return list(range(len(available)))
    req = [classes] if isinstance(classes, (str, int, np.integer)) else list(classes)
    out = []
    for c in req:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (str, int, np.integer)):
            raise TypeError(f"classes: {c!r} is neither a class label (str) nor an output index "
                            f"(int); labels: {all_labels}.")
        if isinstance(c, (int, np.integer)) and not 0 <= int(c) < len(all_labels):
            raise ValueError(
                f"classes: index {c} is out of range for {len(all_labels)} outputs; pass an "
                f"index in 0..{len(all_labels) - 1} or a label of {all_labels}."
            )
        label = all_labels[int(c)] if isinstance(c, (int, np.integer)) else str(c)
        if label not in available:
            raise ValueError(
                f"classes: {c!r} has no map in this parametrization; available: {available} "
                "(the reference parametrization has no map for the baseline class)."
            )
        out.append(available.index(label))
    return out


def _minmax(m: torch.Tensor) -> torch.Tensor:
    lo = m.amin(dim=(-2, -1), keepdim=True)
    m = m - lo
    return m / (m.amax(dim=(-2, -1), keepdim=True) + _EPS_NORM)


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(..., h, w)`` to ``size`` (``align_corners=False``).

    Bilinear interpolation is separable, so it is applied as ``U_y m U_x'`` with two small
    matrices: the same numbers as ``F.interpolate`` and much faster for many channels.
    """
    h, w = m.shape[-2:]
    if (h, w) == tuple(size):
        return m
    uy, ux = interp_matrix(h, size[0]).to(m.dtype), interp_matrix(w, size[1]).to(m.dtype)
    return torch.matmul(torch.matmul(uy, m), ux.T)


def _record_maps(
    model: nn.Module, x: torch.Tensor, layer: str, batch_size: int
) -> torch.Tensor:
    """Feature maps of ``layer`` (float64, CPU) under inference mode, in batches."""
    device = model_device(model)
    with ActivationRecorder(
        model, [layer], lambda n, o: o.to("cpu", torch.float64, copy=True)
    ) as rec, torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            rec.forward(x[s : s + batch_size].to(device))  # refuses a reused module by name
    maps = torch.cat(rec.records[layer])
    if maps.dim() != 4:
        raise ValueError(f"layer {layer!r} returns shape {tuple(maps.shape)}; a CAM needs (N, C, H, W).")
    return maps


def _contrast(scores: torch.Tensor, parametrization: str, link: str) -> torch.Tensor:
    if link != "softmax" or parametrization == "network":
        return scores
    if parametrization == "sum_to_zero":
        return scores - scores.mean(dim=1, keepdim=True)
    return scores[:, 1:] - scores[:, :1]


def _gradient_maps(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    score_module: str | None,
    class_cols: list[int],
    parametrization: str,
    link: str,
    method: str,
    pp_alpha: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM(++) linear maps ``(n, C, h, w)`` and the layer's maps for one batch.

    Runs its own forward pass with gradients enabled (also inside a caller's inference_mode),
    hooks removed and train/eval flags restored in ``finally``.
    """
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}

    base, _, call = parse_layer(layer)
    calls = [0]

    def keep_layer(mod, inp, out):
        calls[0] += 1
        if call is None and calls[0] > 1:
            raise ReusedModuleError(reuse_message(base, calls[0]))
        if calls[0] != (call or 1):
            return None
        store["a"] = out
        return out.clone()  # later in-place ops modify the clone, not the tensor we differentiate

    def keep_score(mod, inp, out):
        store["s"] = out

    handles = []
    with model_guard(model):
        try:
            handles.append(modules[base].register_forward_hook(keep_layer))
            if score_module is not None:
                handles.append(modules[score_module].register_forward_hook(keep_score))
            with torch.inference_mode(False), torch.enable_grad():
                # a leaf that requires grad keeps the layer in the graph even if no parameter
                # precedes it (autograd.grad only computes what the layer's gradient needs)
                xb = x.clone().to(model_device(model)).requires_grad_(True)
                out = model(xb)
                scores = _contrast(store.get("s", out), parametrization, link)
                acts = store["a"]
                if acts.dim() != 4:
                    raise ValueError(f"layer {layer!r} returns shape {tuple(acts.shape)}; Grad-CAM needs (N, C, H, W).")
                a64 = acts.detach().to("cpu", torch.float64)
                maps = []
                for i, c in enumerate(class_cols):
                    g = torch.autograd.grad(
                        scores[:, c].sum(), acts, retain_graph=i < len(class_cols) - 1
                    )[0].detach().to("cpu", torch.float64)
                    maps.append((_grad_weights(g, a64, method, pp_alpha)[..., None, None] * a64).sum(1))
        finally:
            for h in handles:
                h.remove()
    return torch.stack(maps, dim=1), a64


def _grad_weights(g: torch.Tensor, a: torch.Tensor, method: str, pp_alpha: str) -> torch.Tensor:
    """Channel weights ``(n, p)`` from gradients ``g`` and maps ``a`` (both ``(n, p, h, w)``)."""
    if method == "gradcam":
        return g.mean(dim=(2, 3))
    g2 = g * g
    if pp_alpha == "torchcam":
        # torchcam 0.5 divides a boolean-masked copy in place, so its alpha stays g**2.
        alpha = g2
    else:
        # Chattopadhyay et al. 2018, eq. 19 (as pytorch-grad-cam): g^3 at (i, j) times sum_ab A.
        denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g
        alpha = torch.where(g != 0, g2 / (denom + _EPS_PP), torch.zeros_like(g))
    return (alpha * torch.relu(g)).sum(dim=(2, 3))


# ----------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class CAMResult:
    """Class activation maps of a batch of images, with uncertainty when available.

    Arrays are read-only; maps are ``(N, C, H, W)`` with ``C = len(classes)``.

    Attributes
    ----------
    maps : ndarray
        Display maps (ReLU / min-max / upsampling as configured).
    raw : ndarray
        Linear maps (no ReLU, no normalisation; upsampled when ``upsample``).
    se, z : ndarray or None
        Per-location standard error and ``raw / se`` (CAM with covariances only).
    mask_pointwise, mask_simultaneous : ndarray of bool or None
        ``|z| > z_{1-alpha/2}`` and ``|raw| > sim_threshold[n, c] * band_se`` (the
        simultaneous band excludes 0; with ``band="pixels"`` that is ``|z| > sim_threshold``).
    sim_threshold : ndarray, shape (N, C), or None
        Simulated simultaneous critical value per image and class.
    band_se : ndarray or None
        Scale of the simultaneous band ``raw +- sim_threshold * band_se``: the interpolated
        cell SEs (``band="cells"``, at least ``se``) or ``se`` itself (``band="pixels"``).
    band : str
        ``"cells"`` or ``"pixels"``: where the simultaneous threshold was simulated.
    pointwise_threshold : float or None
    classes, sample_ids : tuple of str
    method, layer, parametrization, source, intercept, normalize : str
    relu, upsample : bool
    alpha : float
    n_sim, seed : int
    activations : ndarray, shape (N, p, h, w)
        The layer's feature maps (float64) the maps were built from.
    coefficients : CAMCoefficients or None
        The weights behind a CAM (None for Grad-CAM).
    """

    maps: np.ndarray = field(repr=False)
    raw: np.ndarray = field(repr=False)
    classes: tuple[str, ...]
    sample_ids: tuple[str, ...] = field(repr=False)
    method: str
    layer: str
    parametrization: str
    source: str
    intercept: str
    relu: bool
    normalize: str | None
    upsample: bool
    alpha: float
    n_sim: int
    seed: int
    activations: np.ndarray = field(repr=False)
    coefficients: CAMCoefficients | None = field(default=None, repr=False)
    se: np.ndarray | None = field(default=None, repr=False)
    z: np.ndarray | None = field(default=None, repr=False)
    mask_pointwise: np.ndarray | None = field(default=None, repr=False)
    mask_simultaneous: np.ndarray | None = field(default=None, repr=False)
    sim_threshold: np.ndarray | None = field(default=None, repr=False)
    band_se: np.ndarray | None = field(default=None, repr=False)
    pointwise_threshold: float | None = None
    band: str = "cells"
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("maps", "raw", "activations", "se", "z", "mask_pointwise",
                     "mask_simultaneous", "sim_threshold", "band_se"):
            arr = getattr(self, name)
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False

    @property
    def has_uncertainty(self) -> bool:
        return self.se is not None

    def class_index(self, cls: str | int) -> int:
        """Position of a class label in ``classes``."""
        label = str(cls)
        if label not in self.classes:
            raise KeyError(f"class {cls!r} has no map; mapped classes: {self.classes}.")
        return self.classes.index(label)

    def map(self, cls: str | int, kind: str = "maps") -> np.ndarray:
        """``(N, H, W)`` array of one class: ``kind`` in maps, raw, se, z, mask_pointwise,
        mask_simultaneous."""
        arr = getattr(self, kind)
        if arr is None:
            raise ValueError(f"{kind} is not available (CAM with covariances only).")
        return arr[:, self.class_index(cls)]

    def for_targets(self, targets, kind: str = "maps") -> np.ndarray:
        """``(N, H, W)``: for image n the map of class ``targets[n]`` (labels or indices into
        the head's classes are both read as labels via ``str``)."""
        arr = getattr(self, kind)
        if arr is None:
            raise ValueError(f"{kind} is not available (CAM with covariances only).")
        t = list(targets)
        if len(t) != arr.shape[0]:
            raise ValueError(f"targets has {len(t)} entries for {arr.shape[0]} images.")
        idx = np.array([self.class_index(c) for c in t])
        return arr[np.arange(arr.shape[0]), idx]

    @property
    def summary(self) -> pd.DataFrame:
        """One row per (image, class): range of the linear map, counts of significant
        locations and the simultaneous threshold."""
        n, c = self.raw.shape[:2]
        df = pd.DataFrame(
            {
                "sample_id": np.repeat(self.sample_ids, c),
                "class": np.tile(self.classes, n),
                "raw_min": self.raw.min(axis=(2, 3)).ravel(),
                "raw_max": self.raw.max(axis=(2, 3)).ravel(),
                "raw_mean": self.raw.mean(axis=(2, 3)).ravel(),
            }
        )
        if self.se is not None:
            df["n_sig_pointwise"] = self.mask_pointwise.sum(axis=(2, 3)).ravel()
            if self.mask_simultaneous is not None:
                df["n_sig_simultaneous"] = self.mask_simultaneous.sum(axis=(2, 3)).ravel()
                df["sim_threshold"] = self.sim_threshold.ravel()
        return df

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>CAMResult</b>: {self.method} on <code>{self.layer}</code>, "
            f"{len(self.sample_ids)} images x {len(self.classes)} classes, parametrization "
            f"<b>{self.parametrization}</b> (source: {self.source}). {self.note}</p>"
        )
        return head + self.summary.head(20).to_html(index=False, float_format="%.4g")

    # ------------------------------------------------------------------ GLM cross-reference
    def coefficient_table(self) -> pd.DataFrame:
        """Wald table of the map's coefficients (see :func:`coefficient_table`)."""
        if self.coefficients is None:
            raise ValueError("Grad-CAM maps have no GLM coefficients.")
        return coefficient_table(self.coefficients, self.layer, self.alpha)

    def significant_channels(self, correction: str = "holm") -> pd.DataFrame:
        """Boolean ``(channel x class)`` table: corrected p-value below ``alpha``."""
        if correction not in CORRECTIONS:
            raise ValueError(f"correction={correction!r}; use one of {tuple(CORRECTIONS)}.")
        tab = self.coefficient_table()
        sig = tab[CORRECTIONS[correction]].lt(self.alpha).fillna(False)
        return (
            tab.assign(sig=sig.to_numpy())
            .pivot(index="term", columns="class", values="sig")
            .reindex(columns=list(self.coefficients.classes))
            .astype(bool)
        )

    def significant_only(self, correction: str = "holm") -> CAMResult:
        """The CAM rebuilt from the channels whose coefficient survives the correction.

        Other channels get weight 0 (the intercept is kept as configured). SE, z and masks
        are not recomputed: a map chosen after looking at the p-values would need
        post-selection inference, so the returned result carries none.
        """
        sig = self.significant_channels(correction).to_numpy()  # (p, K')
        coefs = self.coefficients
        params = coefs.params.copy()
        params[1:][~sig] = 0.0
        masked = replace(coefs, params=params, class_covs=None, table=None,
                         source=f"{coefs.source}, significant ({correction}, alpha={self.alpha})")
        cols = [coefs.classes.index(c) for c in self.classes]
        raw_lo = _linear_maps(torch.from_numpy(np.array(self.activations)), params[:, cols],
                              self.intercept == "spread")
        size = tuple(self.raw.shape[-2:])
        maps, raw = _finish(raw_lo, self.relu, self.normalize, size)
        return replace(
            self, maps=maps, raw=raw, coefficients=masked, source=masked.source, se=None, z=None,
            mask_pointwise=None, mask_simultaneous=None, sim_threshold=None, band_se=None,
            pointwise_threshold=None, activations=np.array(self.activations),
            note=f"significant channels only ({correction}); no SE after selection",
        )

    def cross_reference(
        self, images=None, classes=None, *, top: int = 5, correction: str = "holm"
    ) -> pd.DataFrame:
        """Channels behind each map, with their GLM inference.

        One row per (image, class, channel) for the ``top`` channels ranked by their share of
        the map's positive mass. At feature resolution, the positive mass is
        ``P = sum_{M(x,y) > 0} M(x, y)``; channel k's share is
        ``sum_{M(x,y) > 0} beta_k A_k(x, y) / P`` (shares of all channels plus the intercept's sum
        to 1 and can be negative). ``contribution`` is ``beta_k * mean_xy A_k``, the channel's
        term in the linear predictor.

        Parameters
        ----------
        images : sequence of sample ids or int positions, optional
            Default: all images.
        classes : sequence of labels, optional
            Default: all mapped classes.
        top : int
        correction : {"holm", "bh"}
        """
        if correction not in CORRECTIONS:
            raise ValueError(f"correction={correction!r}; use one of {tuple(CORRECTIONS)}.")
        if self.coefficients is None:
            raise ValueError("Grad-CAM maps have no GLM coefficients; cross-reference a CAM.")
        has_cov = self.coefficients.class_covs is not None
        tab = self.coefficient_table() if has_cov else None
        pos_img = self._image_positions(images)
        cls_list = list(self.classes) if classes is None else [str(c) for c in classes]
        a = np.asarray(self.activations)
        share = 1.0 if self.intercept == "spread" else 0.0
        names = unit_names(self.layer, a.shape[1], conv=True)
        rows = []
        for c in cls_list:
            j = self.coefficients.classes.index(c)
            beta = self.coefficients.params[:, j]
            contrib_map = beta[1:, None, None] * a  # (N, p, h, w)
            m = contrib_map.sum(axis=1) + share * beta[0]
            pos = (m > 0).astype(float)
            mass = (m * pos).sum(axis=(1, 2))
            ch_mass = (contrib_map * pos[:, None]).sum(axis=(2, 3))
            with np.errstate(divide="ignore", invalid="ignore"):
                shares = np.where(mass[:, None] > 0, ch_mass / mass[:, None], np.nan)
            contrib = beta[1:] * a.mean(axis=(2, 3))
            for n in pos_img:
                order = np.argsort(-np.nan_to_num(shares[n], nan=-np.inf), kind="stable")[:top]
                for rank, k in enumerate(order, 1):
                    row = {
                        "sample_id": self.sample_ids[n], "class": c, "rank": rank,
                        "channel": int(k), "term": names[k], "coef": beta[k + 1],
                        "contribution": contrib[n, k], "positive_mass_share": shares[n, k],
                        "positive_mass": mass[n],
                    }
                    rows.append(row)
        out = pd.DataFrame(rows)
        if tab is not None and len(out):
            cols = ["se", "ci_lower", "ci_upper", "p", CORRECTIONS[correction]]
            out = out.merge(tab[["class", "term", *cols]], on=["class", "term"], how="left")
            out["significant"] = out[CORRECTIONS[correction]].lt(self.alpha)
        return out

    def _image_positions(self, images) -> list[int]:
        if images is None:
            return list(range(len(self.sample_ids)))
        ids = {s: i for i, s in enumerate(self.sample_ids)}
        out = []
        for im in [images] if isinstance(images, (str, int, np.integer)) else list(images):
            if isinstance(im, (int, np.integer)) and str(im) not in ids:
                out.append(int(im))
            elif str(im) in ids:
                out.append(ids[str(im)])
            else:
                raise KeyError(f"images: {im!r} is neither a sample id nor a position.")
        return out


def _linear_maps(acts: torch.Tensor, params: np.ndarray, spread: bool) -> torch.Tensor:
    """``(N, C, h, w)`` maps ``share * b + sum_k beta_k A_k`` for coefficient columns."""
    b = torch.from_numpy(np.ascontiguousarray(params, dtype=np.float64))
    m = torch.einsum("kc,nkhw->nchw", b[1:], acts)
    if spread:
        m = m + b[0][None, :, None, None]
    return m


def _finish(raw_lo: torch.Tensor, relu: bool, normalize: str | None, size: tuple[int, int]):
    disp = torch.relu(raw_lo) if relu else raw_lo
    if normalize == "minmax":
        disp = _minmax(disp)
    return _upsample(disp, size).numpy(), _upsample(raw_lo, size).numpy()


# -------------------------------------------------------------------------------- main API
def class_activation_maps(
    model: nn.Module,
    inputs: torch.Tensor | LabeledImages,
    classes: Any = None,
    *,
    layer: str | None = None,
    method: str = "cam",
    coefficients: Any = None,
    parametrization: str | None = None,
    relu: bool | None = None,
    normalize: str | None = "minmax",
    upsample: bool = True,
    intercept: str = "exclude",
    alpha: float = 0.05,
    simultaneous: bool = True,
    band: str = "cells",
    n_sim: int = 2000,
    seed: int = 0,
    batch_size: int = 256,
    gradcampp_alpha: str = "paper",
    head: Head | None = None,
    sample_ids: list[str] | None = None,
) -> CAMResult:
    """Class activation maps (CAM, Grad-CAM, Grad-CAM++) with GLM uncertainty for CAM.

    Parameters
    ----------
    model : nn.Module
    inputs : Tensor (N, C, H, W) or LabeledImages
    classes : label, output index, or a sequence of them, optional
        Classes to map (default: every class available in the parametrization).
    layer : str, optional
        Conv layer. Default: the head's input layer (for CAM it must be the GAP layer).
    method : {"cam", "gradcam", "gradcam++"}
    coefficients : None, RefitResult, CAMCoefficients, ndarray or (ndarray, covariances)
        CAM only. None maps the network's own head weights; otherwise see
        :func:`resolve_coefficients`. With covariances the result carries SE, z and masks.
    parametrization : {"sum_to_zero", "reference", "network"}, optional
        Default ``"sum_to_zero"`` for CAM (softmax class contrasts) and ``"network"`` for
        Grad-CAM(++) (the published methods differentiate the raw logit).
    relu : bool, optional
        ReLU before normalising the display map. Default: False for CAM, True for Grad-CAM(++).
    normalize : {"minmax", None}
    upsample : bool
        Bilinear upsampling of maps (and exact SE) to the input's spatial size.
    intercept : {"exclude", "spread"}
        See the module docstring (intercept share 0 or 1 per location on the mean scale).
    alpha : float
        Level of the pointwise and simultaneous masks (two-sided).
    simultaneous : bool
        Simulate the simultaneous threshold (``n_sim`` draws, ``seed``).
    band : {"cells", "pixels"}
        Where the simultaneous band is built. ``"cells"`` (default): the threshold is the
        ``(1 - alpha)`` quantile of ``max |z*|`` over the ``h x w`` feature cells, and the band
        at a pixel is ``raw +- t * band_se`` with the interpolated cell SEs: a band that holds
        at every cell holds at every pixel (interpolation weights are >= 0 and sum to 1), so it
        is simultaneous over the upsampled map too, at a cost that depends on neither ``p``
        nor the output size. ``"pixels"``: the threshold of ``max |z*|`` over the upsampled
        pixels with their exact SEs (``band_se = se``). Both are valid; neither band is inside
        the other (see :mod:`glminterp.maps.cam_uncertainty`).
    n_sim, seed : int
    batch_size : int
        Images per forward pass.
    gradcampp_alpha : {"paper", "torchcam"}
        Grad-CAM++ pixel weights: ``"paper"`` is Chattopadhyay et al. 2018 eq. 19 (as
        pytorch-grad-cam); ``"torchcam"`` reproduces torchcam 0.5, whose in-place division acts
        on a copy so that its alpha is the squared gradient.
    head : Head, optional
        A detected head (skips detection).
    sample_ids : list of str, optional
        Default: LabeledImages ids, else ``"0", "1", ...``.

    Returns
    -------
    CAMResult
    """
    alpha, batch_size, n_sim, seed = _check_options(
        method, normalize, intercept, gradcampp_alpha, alpha, batch_size, n_sim, seed
    )
    if band not in BANDS:
        raise ValueError(f"band={band!r}; use one of {BANDS}.")
    x, ids = _images_and_ids(inputs, sample_ids)
    if parametrization is None:
        parametrization = "sum_to_zero" if method == "cam" else "network"
    _check_parametrization(parametrization)
    relu = (method != "cam") if relu is None else bool(relu)
    head, layer = _head_and_layer(model, x, coefficients, head, layer, method)
    size = tuple(x.shape[-2:]) if upsample else None
    spread = intercept == "spread"

    if method == "cam":
        raw_lo, acts, coefs, cols, mapped, note = _cam_maps(
            model, x, layer, head, coefficients, classes, parametrization, spread, batch_size
        )
    else:
        if coefficients is not None:
            raise ValueError("coefficients apply to method='cam' only.")
        coefs = None
        raw_lo, acts, cols, mapped, note = _gradient_cams(
            model, x, layer, head, classes, parametrization, method, gradcampp_alpha, batch_size
        )
    size = size or tuple(raw_lo.shape[-2:])
    maps, raw = _finish(raw_lo, relu, normalize, size)
    extra: dict[str, Any] = {}
    if coefs is not None and coefs.class_covs is not None:
        extra = uncertainty(acts, coefs.class_covs[cols], cols, raw, 1.0 if spread else 0.0,
                            size, alpha, simultaneous, n_sim, seed, band)
    return CAMResult(
        maps=maps, raw=raw, classes=mapped, sample_ids=ids, method=method, layer=layer,
        parametrization=parametrization, source=coefs.source if coefs else "gradients",
        intercept=intercept if method == "cam" else "exclude", relu=relu, normalize=normalize,
        upsample=upsample, alpha=alpha, n_sim=n_sim, seed=seed, band=band,
        activations=acts.numpy(),
        coefficients=coefs, note=note, **extra,
    )


def _check_options(
    method: str, normalize: str | None, intercept: str, gradcampp_alpha: str, alpha: float,
    batch_size: int, n_sim: int, seed: int,
) -> tuple[float, int, int, int]:
    """Validate :func:`class_activation_maps`' options; returns the checked numbers."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {METHODS}.")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r}; use 'minmax' or None.")
    if intercept not in INTERCEPT:
        raise ValueError(f"intercept={intercept!r}; use one of {INTERCEPT}.")
    if gradcampp_alpha not in GRADCAMPP_ALPHA:
        raise ValueError(f"gradcampp_alpha={gradcampp_alpha!r}; use one of {GRADCAMPP_ALPHA}.")
    alpha = check_real("alpha", alpha, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    n_sim = check_int("n_sim", n_sim, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    return alpha, batch_size, n_sim, seed


def _images_and_ids(
    inputs: torch.Tensor | LabeledImages, sample_ids: list[str] | None
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The image tensor and one id per image (given, from LabeledImages, or ``"0", "1", ...``)."""
    x, ids = _as_tensor(inputs)
    if x.shape[0] == 0:
        raise ValueError("inputs is empty.")
    ids = tuple(str(s) for s in sample_ids) if sample_ids is not None else ids
    ids = ids if ids is not None else tuple(str(i) for i in range(x.shape[0]))
    if len(ids) != x.shape[0]:
        raise ValueError(f"sample_ids has {len(ids)} entries for {x.shape[0]} images.")
    return x, ids


def _head_and_layer(
    model: nn.Module, x: torch.Tensor, coefficients: Any, head: Head | None, layer: str | None,
    method: str,
) -> tuple[Head | None, str]:
    """The head (given, the refit's, or detected; None allowed for Grad-CAM) and the map layer."""
    if head is None and isinstance(getattr(coefficients, "head", None), Head):
        head = coefficients.head  # the refit's head: its link (e.g. sigmoid) is not re-guessed
    if head is None:
        try:
            head = detect_head(model, x[:2].to(model_device(model)), input_hook=True)
        except HeadError:
            if method == "cam":
                raise
    if layer is None:
        if head is None:
            raise ValueError("layer=None needs a detectable head; pass layer=<conv module name>.")
        layer = head.input_layer
    resolve_layers(model, layer)
    return head, layer


def _cam_maps(
    model: nn.Module, x: torch.Tensor, layer: str, head: Head, coefficients: Any, classes: Any,
    parametrization: str, spread: bool, batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, CAMCoefficients, Any, tuple, str]:
    """CAM: the layer's maps weighted by the resolved coefficients, before upsampling."""
    _check_cam_layer(head, layer)
    acts = _record_maps(model, x, layer, batch_size)
    coefs = resolve_coefficients(coefficients, head, layer, acts.shape[1], parametrization)
    cols = _select_classes(classes, coefs.classes, tuple(head.classes))
    raw_lo = _linear_maps(acts, coefs.params[:, cols], spread)
    note = _param_note(head, parametrization)
    mapped = tuple(coefs.classes[c] for c in cols)
    return raw_lo, acts, coefs, cols, mapped, note


def _gradient_cams(
    model: nn.Module, x: torch.Tensor, layer: str, head: Head | None, classes: Any,
    parametrization: str, method: str, gradcampp_alpha: str, batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, Any, tuple, str]:
    """Grad-CAM(++): gradient-weighted maps of the chosen class scores, before upsampling."""
    link = head.link if head is not None else "identity"
    score_module = head.name if head is not None else None
    with model_guard(model), torch.inference_mode():
        n_out = model(x[:1].to(model_device(model))).shape[1]
    labels = tuple(head.classes) if head is not None and len(head.classes) == n_out else tuple(
        str(i) for i in range(n_out)
    )
    avail = labels[1:] if link == "softmax" and parametrization == "reference" else labels
    cols = _select_classes(classes, avail, labels)
    parts = [
        _gradient_maps(model, x[s : s + batch_size], layer, score_module, cols,
                       parametrization, link, method, gradcampp_alpha)
        for s in range(0, x.shape[0], batch_size)
    ]
    raw_lo = torch.cat([p[0] for p in parts])
    acts = torch.cat([p[1] for p in parts])
    note = "" if head is None else _param_note(head, parametrization)
    mapped = tuple(avail[c] for c in cols)
    return raw_lo, acts, cols, mapped, note


def _check_cam_layer(head: Head, layer: str) -> None:
    """CAM is defined when the head's input is the spatial mean of ``layer``'s maps."""
    if head.gap and layer == head.input_layer:
        return
    if head.gap:
        raise ValueError(
            f"CAM needs the layer whose channel means feed the global-average-pooling head "
            f"{head.name!r}: that is "
            f"{head.input_layer!r}, not layer={layer!r}. Use method='gradcam' for other layers."
        )
    if head.input_layer.endswith("#in"):
        raise ValueError(
            f"CAM is not defined for head {head.name!r}: its input is computed by functional ops "
            "in forward() after the last module (e.g. F.relu before the pooling, as in "
            "torchvision's DenseNet), so no module's maps average to it. Make the op that runs "
            "after the last map module an nn.Module (nn.ReLU) so its maps can be hooked, or use "
            "method='gradcam' with layer=<a conv module>."
        )
    raise ValueError(
        f"CAM needs a global-average-pooling head; head {head.name!r} reads {head.input_layer!r} "
        "directly (flattened cells or dense units, no spatial mean). Use method='gradcam' with "
        "layer=<a conv module>."
    )


def _param_note(head: Head, parametrization: str) -> str:
    if head.link != "softmax":
        return f"{head.link} head: parameters are identified (all parametrizations agree)."
    return {
        "sum_to_zero": "softmax class contrasts: sum-to-zero, map_c - mean_j map_j.",
        "reference": f"softmax class contrasts: reference class {head.classes[0]!r}, map_c - map_0.",
        "network": "raw network weights (not identified for softmax).",
    }[parametrization]
