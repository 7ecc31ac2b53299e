"""What the hidden units of an MLP look for, ranked by the GLM refit of its head.

The seed question (a 784 -> 100 -> 10 digit network) ranks hidden units by their raw output
weight for a class and looks at each unit's input weights as a 28x28 image, and at their
element-wise product with an input. Here units are ranked by the refit's z (a coefficient
measured against its standard error, comparable across units of different scale) and marked
significant after a multiplicity correction. For the 784 -> 1 -> 2 network the head is a
one-regressor GLM: :func:`zero_one_analysis` reports its coefficient, SE, CI and deviance.

Input-pixel importance as in R's NeuralNetTools is also given:

- Olden & Jackson (2002) connection weights: ``sum_h w_ih v_hk`` (signed, per output k);
- Garson (1991) / Goh (1995): ``Q_ih = |w_ih v_h| / sum_i |w_ih v_h|``,
  ``RI_i = sum_h Q_ih / sum_i sum_h Q_ih``. With one hidden layer ``|v_h|`` cancels in
  ``Q_ih``, so Garson's importance is the same for every output class (NeuralNetTools only
  allows one output; it is reported per class here for comparison and is identical).

The GLM counterpart of Olden's importance replaces the network's output weights by the refit
coefficients: ``e_ik = sum_h w_ih beta_hk``, a linear combination of coefficients with
``Var(e_ik) = w_i' Sigma_k w_i`` (input weights held fixed), hence a z and p for each pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests
from torch import nn

from glminterp.saliency._common import CORRECTIONS, class_coefficients


# ------------------------------------------------------------------------------ layers
def hidden_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Linear]:
    """The ``nn.Linear`` computing the hidden units (the input weights of the GLM regressors).

    Default: the only Linear layer other than the last one (the head) in ``model``.
    """
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules or not isinstance(modules[layer], nn.Linear):
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            raise KeyError(f"layer={layer!r} is not an nn.Linear of the model; Linear layers: {linears}.")
        return layer, modules[layer]
    linears = [(n, m) for n, m in modules.items() if isinstance(m, nn.Linear)]
    if len(linears) != 2:
        raise ValueError(
            f"The model has {len(linears)} Linear layers; pass layer=<name of the hidden Linear> "
            "(automatic choice needs exactly one hidden Linear and the head)."
        )
    return linears[0]


def _as_images(weights: np.ndarray, shape: Sequence[int] | None) -> np.ndarray:
    n_in = weights.shape[1]
    if shape is None:
        side = int(round(np.sqrt(n_in)))
        if side * side != n_in:
            raise ValueError(f"{n_in} inputs are not a square image; pass shape=(H, W).")
        shape = (side, side)
    shape = tuple(int(s) for s in shape)
    if int(np.prod(shape)) != n_in:
        raise ValueError(f"shape {shape} does not hold {n_in} inputs.")
    return weights.reshape(weights.shape[0], *shape)


def input_weight_images(
    model: nn.Module,
    units: Sequence[int],
    *,
    layer: str | None = None,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Input weights of hidden ``units`` as images, shape ``(len(units), H, W)``."""
    _, lin = hidden_layer(model, layer)
    w = lin.weight.detach().cpu().double().numpy()
    units = np.asarray(units, dtype=int)
    if units.size and (units.min() < 0 or units.max() >= w.shape[0]):
        raise ValueError(f"units must lie in 0..{w.shape[0] - 1}.")
    return _as_images(w[units], shape)


# ------------------------------------------------------------------------------ ranking
def rank_units(
    refit: Any,
    cls: Any,
    *,
    n: int = 5,
    alpha: float = 0.05,
    correction: str = "holm",
) -> pd.DataFrame:
    """The ``n`` units with the largest and the ``n`` with the smallest refit z for ``cls``.

    Returns
    -------
    DataFrame
        ``direction`` ("positive"/"negative"), ``rank`` (1 = most extreme), ``term``, ``unit``,
        ``coef, se, z, p, p_adj, significant``, ``network_weight`` and ``weight_rank`` (the
        unit's rank by its network weight in the same direction, to show where ranking by
        raw weight would put it).
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    rows = class_coefficients(refit, cls, correction=correction)
    rows["significant"] = rows["p_adj"] < alpha
    has_w = "network_weight" in rows
    out = []
    for direction, asc in (("positive", False), ("negative", True)):
        part = rows.sort_values("z", ascending=asc, kind="stable").head(n).copy()
        part.insert(0, "direction", direction)
        part.insert(1, "rank", np.arange(1, len(part) + 1))
        if has_w:
            w_rank = rows["network_weight"].rank(ascending=asc, method="first")
            part["weight_rank"] = w_rank.loc[part.index].astype(int).to_numpy()
        out.append(part)
    cols = ["direction", "rank", "term", "unit", "coef", "se", "z", "p", "p_adj", "significant"]
    if has_w:
        cols += ["network_weight", "weight_rank"]
    return pd.concat(out, ignore_index=True)[cols]


@dataclass(frozen=True)
class HiddenUnitFields:
    """Input-weight images of the units ranked by the refit, and their product with an image.

    Attributes
    ----------
    units : DataFrame
        :func:`rank_units`'s table.
    weights : ndarray, shape (n_units, H, W)
        Input weights of each listed unit, in the table's order.
    products : ndarray or None, shape (n_units, H, W)
        ``image * weights`` (the seed question's element-wise product), when an image is given.
    image : ndarray or None, shape (H, W)
    cls : str
    """

    units: pd.DataFrame = field(repr=False)
    weights: np.ndarray = field(repr=False)
    products: np.ndarray | None = field(repr=False)
    image: np.ndarray | None = field(repr=False)
    cls: str

    @property
    def summary(self) -> pd.DataFrame:
        return self.units

    def _repr_html_(self) -> str:
        return self.units.to_html(float_format=lambda v: f"{v:.4g}")


def hidden_unit_fields(
    model: nn.Module,
    refit: Any,
    cls: Any,
    *,
    image: np.ndarray | torch.Tensor | None = None,
    layer: str | None = None,
    n: int = 5,
    alpha: float = 0.05,
    correction: str = "holm",
    shape: Sequence[int] | None = None,
) -> HiddenUnitFields:
    """Rank hidden units by the refit's z for ``cls`` and return their input-weight images.

    Parameters
    ----------
    model : nn.Module
        An MLP whose head's inputs are the units of one hidden Linear layer (after its
        activation).
    refit : RefitResult or its coefficients DataFrame
    cls : str or int
    image : array, optional
        One input image (any shape with H*W pixels) for the element-wise product.
    layer : str, optional
        The hidden Linear layer (default: found by :func:`hidden_layer`).
    n, alpha, correction : see :func:`rank_units`.
    shape : (H, W), optional
        Image shape of the input weights (default: square).
    """
    units = rank_units(refit, cls, n=n, alpha=alpha, correction=correction)
    weights = input_weight_images(model, units["unit"].to_numpy(), layer=layer, shape=shape)
    img = prod = None
    if image is not None:
        img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64)
        if img.size != weights[0].size:
            raise ValueError(f"image has {img.size} pixels; the weights have {weights[0].size}.")
        img = img.reshape(weights.shape[1:])
        prod = weights * img[None]
    return HiddenUnitFields(units=units, weights=weights, products=prod, image=img, cls=str(cls))


# ------------------------------------------------------------------------------ 784 -> 1 -> 2
@dataclass(frozen=True)
class ZeroOneResult:
    """The single-hidden-unit network: its weight image and its one-regressor head refit.

    Attributes
    ----------
    weight_image : ndarray, shape (H, W)
    coefficients : DataFrame
        The refit's rows (intercept and the unit) for the non-baseline class: coef, se, z, p,
        CI and the network's own weight.
    deviance, null_deviance, network_deviance : float
        ``-2 log L`` of the refit, of the intercept-only model, and of the network's own head,
        on the rows the refit used.
    lr_statistic, lr_pvalue : float
        ``null_deviance - deviance`` against chi-square with 1 df (the unit's likelihood-ratio
        test).
    n_obs : int
    """

    weight_image: np.ndarray = field(repr=False)
    coefficients: pd.DataFrame = field(repr=False)
    deviance: float
    null_deviance: float
    network_deviance: float
    lr_statistic: float
    lr_pvalue: float
    n_obs: int

    @property
    def summary(self) -> pd.DataFrame:
        return self.coefficients

    def _repr_html_(self) -> str:
        head = (
            f"<p>n = {self.n_obs}; deviance {self.deviance:.4g} (null {self.null_deviance:.4g}, "
            f"network {self.network_deviance:.4g}); LR = {self.lr_statistic:.4g}, "
            f"p = {self.lr_pvalue:.3g}</p>"
        )
        return head + self.coefficients.to_html(float_format=lambda v: f"{v:.4g}")


def _softmax_rows(eta: np.ndarray) -> np.ndarray:
    eta = eta - eta.max(axis=1, keepdims=True)
    p = np.exp(eta)
    return p / p.sum(axis=1, keepdims=True)


def _deviance(prob: np.ndarray, y: np.ndarray) -> float:
    return float(-2.0 * np.sum(np.log(np.clip(prob[np.arange(len(y)), y], 1e-300, None))))


def zero_one_analysis(
    model: nn.Module,
    acts: Any,
    refit: Any = None,
    *,
    split: str = "refit",
    layer: str | None = None,
    shape: Sequence[int] | None = None,
) -> ZeroOneResult:
    """The 784 -> 1 -> 2 network: weight image of its unit and the refit of its head.

    Parameters
    ----------
    model : nn.Module
        A network with one hidden unit and a two-class softmax head (:func:`zero_one_net`).
    acts : Activations
        Its extracted activations (the refit rows are ``acts.subset(split=split)``).
    refit : RefitResult, optional
        Default: ``glminterp.refit_output_layer(acts, split=split, progress=False)``.
    split : str
        The split the refit used (for the deviances).
    layer, shape : see :func:`input_weight_images`.
    """
    _, lin = hidden_layer(model, layer)
    if lin.out_features != 1:
        raise ValueError(f"The hidden layer has {lin.out_features} units; this analysis needs 1.")
    if refit is None:
        from glminterp.refit import refit_output_layer

        refit = refit_output_layer(acts, split=split, progress=False)
    if getattr(acts.head, "link", None) != "softmax" or acts.head.n_outputs != 2:
        raise ValueError("zero_one_analysis needs a two-class softmax head.")
    image = input_weight_images(model, [0], layer=layer, shape=shape)[0]
    params = refit.params()
    rows = acts.subset(split=split)
    x = rows.head_features().to_numpy(dtype=np.float64)
    y = rows.obs["label"].to_numpy().astype(int)
    terms = [t for t in params.index if t != "const"]
    xt = np.column_stack([np.ones(len(x)), rows.head_features()[terms].to_numpy(np.float64)])
    eta = xt @ params.loc[["const", *terms]].to_numpy(np.float64)
    if eta.shape[1] == 1:  # reference parametrization: class 0 is the zero baseline
        eta = np.column_stack([np.zeros(len(eta)), eta])
    dev = _deviance(_softmax_rows(eta), y)
    freq = np.bincount(y, minlength=2) / len(y)
    null_dev = _deviance(np.tile(freq, (len(y), 1)), y)
    net_eta = np.column_stack([np.ones(len(x)), x]) @ acts.head.coef_matrix()
    net_dev = _deviance(_softmax_rows(net_eta), y)
    coefs = refit.coefficients
    lr = null_dev - dev
    return ZeroOneResult(
        weight_image=image,
        coefficients=coefs[coefs["class"] == coefs["class"].iloc[-1]].reset_index(drop=True),
        deviance=dev,
        null_deviance=null_dev,
        network_deviance=net_dev,
        lr_statistic=lr,
        lr_pvalue=float(stats.chi2.sf(lr, df=1)),
        n_obs=len(y),
    )


# ------------------------------------------------------------------------------ Olden / Garson
def olden_importance(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """Olden's connection-weight importance, ``(n_inputs, n_outputs)``.

    Parameters
    ----------
    w_in : ndarray, shape (n_hidden, n_inputs)
        Input-to-hidden weights (``nn.Linear.weight`` layout, biases excluded).
    w_out : ndarray, shape (n_outputs, n_hidden)
        Hidden-to-output weights.
    """
    w_in, w_out = np.asarray(w_in, np.float64), np.asarray(w_out, np.float64)
    if w_in.shape[0] != w_out.shape[1]:
        raise ValueError(f"w_in has {w_in.shape[0]} hidden units, w_out {w_out.shape[1]}.")
    return w_in.T @ w_out.T


def garson_importance(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """Garson's relative importance as in NeuralNetTools, ``(n_inputs, n_outputs)``.

    Per output k: ``P_ih = |w_ih| |v_kh|``, ``Q_ih = P_ih / sum_i P_ih``, ``S_i = sum_h Q_ih``,
    ``RI_i = S_i / sum_i S_i``; each column sums to one. Hidden units whose weights are all
    zero contribute nothing.
    """
    w_in, w_out = np.asarray(w_in, np.float64), np.asarray(w_out, np.float64)
    if w_in.shape[0] != w_out.shape[1]:
        raise ValueError(f"w_in has {w_in.shape[0]} hidden units, w_out {w_out.shape[1]}.")
    out = np.empty((w_in.shape[1], w_out.shape[0]))
    for k in range(w_out.shape[0]):
        p = np.abs(w_in) * np.abs(w_out[k])[:, None]  # (hidden, inputs)
        tot = p.sum(axis=1, keepdims=True)
        q = np.divide(p, tot, out=np.zeros_like(p), where=tot > 0)
        s = q.sum(axis=0)
        out[:, k] = s / s.sum()
    return out


def input_importance(
    model: nn.Module,
    refit: Any = None,
    cls: Any = None,
    *,
    layer: str | None = None,
    head: str | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
    shape: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Per input pixel: Olden, Garson, and the GLM-based effect with its z, for class ``cls``.

    Parameters
    ----------
    model : nn.Module
        One hidden Linear layer and a Linear head.
    refit : RefitResult, optional
        Adds ``glm_effect = sum_h w_ih beta_h(cls)``, its ``glm_se`` from ``refit.class_cov``,
        ``glm_z``, ``glm_p`` and ``glm_p_adj`` (corrected across pixels), plus
        ``olden_net`` (Olden with the network's head in the refit's parametrization, the like-
        for-like comparison). Units the refit dropped count as zero.
    cls : str or int
        Output class. Without a refit, an index/label into the head's outputs.
    layer, head : str, optional
        Names of the hidden Linear and the head (default: the model's two Linear layers).
    shape : (H, W), optional
        Adds ``row`` and ``col`` columns.

    Returns
    -------
    DataFrame
        One row per input: ``input, row, col, olden, garson`` [, GLM columns] and the ranks
        ``olden_rank, garson_rank`` [, ``glm_rank`` by |z|] (1 = most important).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction={correction!r}; use one of {CORRECTIONS}.")
    hid_name, lin = hidden_layer(model, layer)
    modules = dict(model.named_modules())
    if head is None:
        head_candidates = [m for n, m in modules.items() if isinstance(m, nn.Linear) and n != hid_name]
        if len(head_candidates) != 1:
            raise ValueError("Pass head=<name of the output Linear>; it could not be chosen.")
        head_lin = head_candidates[0]
    else:
        head_lin = modules.get(head)
        if not isinstance(head_lin, nn.Linear):
            raise KeyError(f"head={head!r} is not an nn.Linear of the model.")
    w_in = lin.weight.detach().cpu().double().numpy()
    w_out = head_lin.weight.detach().cpu().double().numpy()
    if cls is None:
        raise ValueError("cls is needed: the output class to explain.")
    k = int(cls) if refit is None or not hasattr(refit, "head") else list(refit.head.classes).index(str(cls))
    if not 0 <= k < w_out.shape[0]:
        raise ValueError(f"cls={cls!r} is not one of the {w_out.shape[0]} outputs.")
    n_in = w_in.shape[1]
    df = pd.DataFrame({"input": np.arange(n_in)})
    if shape is not None:
        h, w = (int(s) for s in shape)
        if h * w != n_in:
            raise ValueError(f"shape {shape} does not hold {n_in} inputs.")
        df["row"], df["col"] = np.divmod(np.arange(n_in), w)
    df["olden"] = olden_importance(w_in, w_out)[:, k]
    df["garson"] = garson_importance(w_in, w_out)[:, k]
    df["olden_rank"] = df["olden"].abs().rank(ascending=False, method="first").astype(int)
    df["garson_rank"] = df["garson"].rank(ascending=False, method="first").astype(int)
    if refit is None:
        return df
    rows = class_coefficients(refit, cls, correction=correction)
    units = rows["unit"].to_numpy()
    wu = w_in[units]  # (kept units, inputs)
    df["glm_effect"] = wu.T @ rows["coef"].to_numpy(np.float64)
    if "network_weight" in rows:
        df["olden_net"] = wu.T @ rows["network_weight"].to_numpy(np.float64)
    if hasattr(refit, "class_cov"):
        cov = refit.class_cov(str(cls)).loc[list(rows["term"]), list(rows["term"])].to_numpy(np.float64)
        var = np.einsum("hi,hg,gi->i", wu, cov, wu)
        se = np.sqrt(np.clip(var, 0, None))
        df["glm_se"] = se
        with np.errstate(divide="ignore", invalid="ignore"):
            df["glm_z"] = df["glm_effect"] / se
        df["glm_p"] = 2 * stats.norm.sf(np.abs(df["glm_z"]))
        pvals = df["glm_p"].to_numpy()
        ok = np.isfinite(pvals)
        adj = np.full(n_in, np.nan)
        if correction == "none":
            adj = pvals
        elif ok.any():
            method = "holm" if correction == "holm" else "fdr_bh"
            adj[ok] = multipletests(pvals[ok], method=method)[1]
        df["glm_p_adj"] = adj
        df["glm_significant"] = df["glm_p_adj"] < alpha
        df["glm_rank"] = df["glm_z"].abs().rank(ascending=False, method="first").astype("Int64")
    return df
