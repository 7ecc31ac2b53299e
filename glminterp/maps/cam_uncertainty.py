"""Standard errors, z maps and simultaneous thresholds of (upsampled) class activation maps.

A CAM location ``u`` of class ``c`` is the linear combination ``a(u)' beta_c`` with
``a(u) = [share, A_1(u), ..., A_p(u)]``; its delta-method standard error is
``SE(u) = ||R_c a(u)||`` for any factor ``R_c' R_c = Sigma_c``. Bilinear upsampling is linear:
the channel vector of an output pixel is ``a(u) = sum_i w_i(u) a_i``, a combination of at most
2 x 2 neighbouring feature cells ``i`` (separable weights from the same interpolation matrices
as the maps). Hence, with ``v_i = R_c a_i`` at feature resolution,

``SE^2(u) = sum_{i, j} w_i(u) w_j(u) v_i' v_j``,

and only pairs of cells at offsets (0, 0), (0, 1), (1, 0), (1, 1) and (1, -1) occur. The five
inner-product fields are computed once per feature cell and combined with the squared and
cross-multiplied interpolation weights (:func:`quadratic_upsample`): the cost per output pixel
does not depend on the rank of ``Sigma_c``. :func:`direct_upsampled_se` (upsample all factor
channels, then take the norm) is the slow reference used by the tests.

The simultaneous threshold is the ``(1 - alpha)`` quantile of ``max_u |z*(u)|`` with
``z*(u) = (R_c a(u))' e / SE(u)`` and ``e ~ N(0, I)`` (i.e. ``a(u)' (beta* - beta_hat) / SE(u)``
with ``beta* ~ N(beta_hat, Sigma_c)``), simulated with draws seeded by ``[seed, class column]``
(shared by all images of the class). ``z*`` is a linear map of the draw: at the feature cells
the simulated field is ``f = V e`` (``V`` the ``h w x r`` matrix of the ``v_i``), and every
output pixel interpolates at most 2 x 2 cells, ``z*(u) = sum_c kappa_c(u) zeta_c`` with the
cell z values ``zeta_c = f_c / SE_c`` and ``kappa_c(u) = w_c(u) SE_c / SE(u) >= 0``. Hence
(:func:`_sim_thresholds`):

- the draws live in the cell field's own space: ``e`` itself (``r`` numbers) when ``r <= h w``,
  the same numbers as projecting coefficient draws; for wider factors ``g`` with
  ``f = L g``, ``L L' = V V'`` (:func:`field_loadings`, ``h w`` numbers per draw whatever
  ``p``): the same distribution of ``f``, so of the statistic;
- ``max_u |z*(u)| <= max_c K_c |zeta_c|`` with ``K_c`` the largest ``sum kappa(u)`` over the
  pixels that cell ``c`` touches: one product per image and a reduction over the ``h w``
  cells bound every draw, no upsampling;
- the quantile needs only two order statistics of the ``n_sim`` maxima: they are computed
  exactly, pixel by pixel over the regions that can hold the maximum, only for the draws
  whose bound can reach those ranks.

The result is the quantile of the same exact maxima (equal to the full pixel-space
simulation with the same draws to float32 rounding; :func:`_sim_max_abs_z` and
:func:`_sim_max_abs_z_cells` are those direct references, used by the tests).

Without the simulation, :func:`uncertainty` takes a batched path (:func:`_all_class_se_z`): the
factors of all classes are stacked so that one product per image chunk gives every class's
``v``, and the five fields and the interpolation run for all classes at once (same algebra,
equal to the per-class loop to rounding). With it, the per-class loop below runs, one seeded
stream of draws per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from threadpoolctl import ThreadpoolController

# image chunks: the feature-resolution factor channels of one class (float64) ...
_SE_CHUNK_BYTES = 32 * 2**20
# ... and the (images, draws, locations) float32 block of the simulation, sized to stay in cache
_SIM_CHUNK_BYTES = 8 * 2**20
# ... and the per-pixel interpolation weights of the exact maxima (float64, 4 per pixel)
_KAPPA_CHUNK_BYTES = 64 * 2**20
# ... and the factor channels of all classes at once (fast path), sized to stay in L2
_SE_ALL_CHUNK_BYTES = 2**20


@cache
def _blas_controller() -> ThreadpoolController:
    """Built once: scanning the loaded libraries costs milliseconds per call."""
    return ThreadpoolController()


def _one_blas_thread() -> Any:
    """Context limiting BLAS to one thread (tiny matrices: threads only contend)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` float64 matrix of 1-D linear interpolation (``align_corners=False``).

    Built by interpolating the identity with ``F.interpolate``, so edge clamping follows
    PyTorch exactly. Every row has at most two non-zero, adjacent entries.
    """
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T


def sqrt_factor(cov: np.ndarray) -> np.ndarray:
    """``R`` with ``R.T @ R = cov`` (symmetric eigen-square-root, null directions dropped)."""
    cov = (cov + cov.T) / 2
    d, v = np.linalg.eigh(cov)
    keep = d > max(d.max(initial=0.0), 0.0) * 1e-12
    if not keep.any():
        return np.zeros((1, cov.shape[0]))
    return (v[:, keep] * np.sqrt(d[keep])).T


def quadratic_weights(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of ``(U x)^2`` in terms of ``x_i^2`` and ``2 x_i x_{i+1}`` for a two-tap ``U``.

    For a row with taps ``w_i, w_{i+1}``: ``(w_i x_i + w_{i+1} x_{i+1})^2 = w_i^2 x_i^2 +
    w_{i+1}^2 x_{i+1}^2 + 2 w_i w_{i+1} x_i x_{i+1}``. Returns ``U * U`` (n_out, n_in) and
    ``2 U[:, :-1] * U[:, 1:]`` (n_out, n_in - 1).
    """
    return u * u, 2 * u[:, :-1] * u[:, 1:]


def _shifted_dots(vf: torch.Tensor, shift: int) -> torch.Tensor:
    """``out[m] = vf[m] . vf[m + shift]`` over flattened cells (0 past the end)."""
    m = vf.shape[0]
    out = torch.zeros(m, dtype=vf.dtype)
    if shift < m:
        out[: m - shift] = torch.einsum("ir,ir->i", vf[: m - shift], vf[shift:])
    return out


def quadratic_upsample(
    v: torch.Tensor, wy: tuple[torch.Tensor, torch.Tensor], wx: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """``||U_y U_x v||^2`` per output pixel without upsampling the factor channels.

    Parameters
    ----------
    v : Tensor, shape (B, h, w, r)
        Factor channels ``R a_i`` at feature resolution (contiguous).
    wy, wx : pairs of Tensors
        :func:`quadratic_weights` of the vertical ``(H, h)`` and horizontal ``(W, w)``
        interpolation matrices.

    Returns
    -------
    Tensor, shape (B, H, W)
        ``sum_{i, j} w_i w_j v_i' v_j`` (the squared SE of the upsampled map).
    """
    b, h, w, r = v.shape
    vf = v.reshape(b * h * w, r)

    def field(shift: int) -> torch.Tensor:
        return _shifted_dots(vf, shift).reshape(b, h, w)

    # pairs at offsets (0,0), (0,1), (1,0), (1,1) and (1,-1); flat shifts 0, 1, w, w+1, w-1
    # (pairs that wrap to the next row or image are sliced off)
    d = field(0)
    e = field(1)[:, :, : w - 1]
    f = field(w)[:, : h - 1, :]
    g = field(w + 1)[:, : h - 1, : w - 1]
    anti = field(w - 1)[:, : h - 1, 1:]  # v(y, x + 1)' v(y + 1, x)
    (y0, y1), (x0, x1) = wy, wx
    same_row = torch.matmul(d, x0.T) + torch.matmul(e, x1.T)  # (B, h, W)
    next_row = torch.matmul(f, x0.T) + torch.matmul((g + anti) / 2, x1.T)  # (B, h - 1, W)
    # one (H, h) x (h, B * W) product per term rather than B small ones
    return torch.einsum("Hh,bhW->bHW", y0, same_row) + torch.einsum("Hh,bhW->bHW", y1, next_row)


def direct_upsampled_se(v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Reference SE: upsample every factor channel of ``v`` (B, h, w, r), then the norm."""
    uy = interp_matrix(v.shape[1], size[0])
    ux = interp_matrix(v.shape[2], size[1])
    q = torch.einsum("Ww,bHwr->bHWr", ux, torch.einsum("Hh,bhwr->bHwr", uy, v))
    return torch.linalg.vector_norm(q, dim=3)


def _sim_max_abs_z(
    v: torch.Tensor, se: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor, draws: torch.Tensor
) -> torch.Tensor:
    """``max_u |z*(u)|`` per image and draw: ``(b, n_sim)``.

    ``v`` (b, h, w, r) is upsampled exactly (float64), scaled by ``1 / SE`` and cast to float32;
    one matrix product with the draws (n_sim, r) then gives ``z*`` at every pixel.
    """
    b, _, _, r = v.shape
    q = torch.matmul(ux, v)  # (b, h, W, r): interpolate along x for each row
    q = torch.matmul(uy, q.reshape(b, q.shape[1], -1)).reshape(b, uy.shape[0], ux.shape[0], r)
    qn = (q / se[..., None].clamp_min(1e-300)).float().reshape(b, -1, r)  # (b, L, r)
    zs = torch.matmul(draws, qn.transpose(1, 2))  # (b, n_sim, L): reduce a contiguous axis
    return zs.abs_().amax(dim=2)


def _sim_max_abs_z_cells(
    v: torch.Tensor, se: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor, draws: torch.Tensor
) -> torch.Tensor:
    """:func:`_sim_max_abs_z` computed in coefficient space, for wide heads.

    ``z*(u) = (U a)(u)' R' e / SE(u)`` is linear in the draw: project the draws once onto the
    feature cells (``f = V e``, ``h w`` values per draw instead of ``H W``), then upsample the
    simulated fields (two small products) and scale by ``1 / SE``. Same numbers as the
    pixel-space product (float32 rounding); cheaper when the rank ``r`` is large next to the
    number of cells (p = 512 or 2048 channels on a 7 x 7 map).
    """
    b, h, w, r = v.shape
    f = torch.matmul(draws, v.reshape(b, h * w, r).float().transpose(1, 2))  # (b, n, hw)
    q = torch.matmul(f.view(b, -1, h, w), ux.float().T)  # (b, n, h, W)
    q = torch.matmul(uy.float(), q)  # (b, n, H, W)
    inv = torch.where(se > 0, 1.0 / se.clamp_min(1e-300), 0.0).float()
    q.mul_(inv[:, None]).abs_()
    return q.view(b, q.shape[1], -1).amax(dim=2)


def _cells_cheaper(h: int, w: int, size: tuple[int, int], r: int) -> bool:
    """Coefficient-space simulation beats the pixel-space product (flops, small-matrix factor)."""
    big_h, big_w = size
    cells = h * w * r + h * w * big_w + big_h * big_w * h
    return 4 * cells < big_h * big_w * r


# ------------------------------------------------------------ simultaneous threshold (bounded)
@dataclass(frozen=True)
class _Regions:
    """Output pixels grouped by the 2 x 2 feature cells they interpolate (one region each).

    Attributes
    ----------
    corners : Tensor, shape (R, 4)
        Flat cell index of the region's corners (a clamped edge repeats a cell, weight 0).
    weights : Tensor, shape (R, P, 4)
        Bilinear weight of each corner at each of the region's pixels (rows of padding 0).
    pixels : Tensor, shape (R, P)
        Flat output pixel index; padding points at ``H * W`` (a slot whose ``1 / SE`` is 0).
    """

    corners: torch.Tensor
    weights: torch.Tensor
    pixels: torch.Tensor


def _axis_groups(u: np.ndarray) -> list[tuple[int, int, list[int], list[tuple[float, float]]]]:
    """Output rows of a two-tap interpolation matrix grouped by their tap pair (in order)."""
    groups: dict[tuple[int, int], tuple[list[int], list[tuple[float, float]]]] = {}
    for y, row in enumerate(u):
        nz = np.flatnonzero(row)
        i0, i1 = int(nz[0]), int(nz[-1])
        rows, wts = groups.setdefault((i0, i1), ([], []))
        rows.append(y)
        wts.append((float(row[i0]), float(row[i1]) if i1 > i0 else 0.0))
    return [(i0, i1, rows, wts) for (i0, i1), (rows, wts) in groups.items()]


def _regions(uy: torch.Tensor, ux: torch.Tensor) -> _Regions:
    """:class:`_Regions` of the interpolation ``U_y (.) U_x'`` (``align_corners=False``)."""
    big_h, (big_w, w) = uy.shape[0], ux.shape
    gy, gx = _axis_groups(uy.numpy()), _axis_groups(ux.numpy())
    py, px = max(len(g[2]) for g in gy), max(len(g[2]) for g in gx)
    n_reg = len(gy) * len(gx)
    corners = np.zeros((n_reg, 4), dtype=np.int64)
    weights = np.zeros((n_reg, py, px, 4))
    pixels = np.full((n_reg, py, px), big_h * big_w, dtype=np.int64)
    for a, (y0, y1, rows_y, wy) in enumerate(gy):
        for b, (x0, x1, rows_x, wx) in enumerate(gx):
            k = a * len(gx) + b
            corners[k] = (y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1)
            wy_a, wx_a = np.array(wy), np.array(wx)  # (rows, 2)
            blk = np.einsum("ya,xb->yxab", wy_a, wx_a).reshape(len(rows_y), len(rows_x), 4)
            weights[k, : len(rows_y), : len(rows_x)] = blk
            pixels[k, : len(rows_y), : len(rows_x)] = np.add.outer(
                np.array(rows_y) * big_w, np.array(rows_x))
    return _Regions(torch.from_numpy(corners), torch.from_numpy(weights.reshape(n_reg, -1, 4)),
                    torch.from_numpy(pixels.reshape(n_reg, -1)))


def field_loadings(v: torch.Tensor) -> torch.Tensor:
    """``L`` (b, h w, k) with ``L L' = V V'``: the cell field ``f = V e`` is ``L g``, ``g ~ N(0, I_k)``.

    With rank ``r <= h w`` this is ``V`` itself (``g`` are the coefficient-space draws); wider
    factors are reduced to the ``h w x h w`` Cholesky factor of the cells' covariance (an
    eigen-square-root where it is singular), so the cost per draw is ``h w`` whatever ``r``.
    """
    b, h, w, r = v.shape
    vf = v.reshape(b, h * w, r)
    if r <= h * w:
        return vf
    gram = torch.matmul(vf, vf.transpose(1, 2))
    fac, info = torch.linalg.cholesky_ex(gram)
    bad = info > 0
    if bad.any():  # singular (dead cells, repeated activations): eigen-square-root
        d, q = torch.linalg.eigh(gram[bad])
        fac[bad] = q * d.clamp_min(0).sqrt()[:, None, :]
    return fac


def _region_kappa(
    se_cells: torch.Tensor, se_pix: torch.Tensor, reg: _Regions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: ``kappa`` (b, R, 4, P), ``z(u) = sum_c kappa_c(u) zeta_c``, and its bound.

    ``zeta_c = f_c / SE_c`` is the cell z value; ``kappa_c(u) = w_c(u) SE_c / SE(u) >= 0``.
    The second output ``K`` (b, R) is ``max_u sum_c kappa_c(u)`` over the region, so that
    ``max_{u in region} |z(u)| <= K max_c |zeta_c|``.
    """
    b = se_cells.shape[0]
    inv = torch.zeros(b, se_pix[0].numel() + 1, dtype=torch.float64)
    flat = se_pix.reshape(b, -1)
    inv[:, :-1] = torch.where(flat > 0, 1.0 / flat.clamp_min(1e-300), 0.0)
    kappa = (reg.weights.transpose(1, 2) * se_cells[:, reg.corners][..., None]
             * inv[:, reg.pixels][:, :, None, :])  # (b, R, 4, P)
    return kappa, kappa.sum(2).amax(-1)


def _best_region(
    zt: np.ndarray, kappa: np.ndarray, bound: np.ndarray, corners: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bracket ``max_u |z*(u)|`` of the cell z draws ``zt`` (t, j, h w), float64.

    Returns ``lo`` (t, j), the exact maximum over the region with the largest bound (a lower
    bound), and the other regions' bounds ``rb`` (t, j, R) (that region's set to -1): only
    regions whose bound reaches ``lo`` can hold the maximum. NumPy: its gathers of small
    blocks are much faster than torch's here.
    """
    t, j, _ = zt.shape
    mag = np.abs(zt)
    rb = np.take(mag, corners[:, 0], axis=2)  # (t, j, R): largest |zeta| at a region's corners
    for c in range(1, 4):
        np.maximum(rb, np.take(mag, corners[:, c], axis=2), out=rb)
    rb *= bound[:, None, :]
    best = rb.argmax(2).ravel()
    ii, jj = np.indices((t, j)).reshape(2, -1)
    lo = _region_values(kappa, zt, corners, ii, best, jj).reshape(t, j)
    rb[ii, jj, best] = -1.0
    return lo, rb


def _refine(
    lo: np.ndarray, rb: np.ndarray, zt: np.ndarray, kappa: np.ndarray, corners: np.ndarray,
    cand: np.ndarray,
) -> None:
    """Make ``lo`` exact (in place) at the draws ``cand`` (t, j): every region that can matter."""
    bi, bj, br = np.nonzero(cand[:, :, None] & (rb >= lo[:, :, None] * (1 - 1e-9)))
    step = max(1, _KAPPA_CHUNK_BYTES // (32 * kappa.shape[3]))  # bounded gather of kappa
    for s in range(0, bi.size, step):
        sl = slice(s, s + step)
        vals = _region_values(kappa, zt, corners, bi[sl], br[sl], bj[sl])
        np.maximum.at(lo, (bi[sl], bj[sl]), vals)


def _region_values(
    kappa: np.ndarray, zs: np.ndarray, corners: np.ndarray, i: np.ndarray, r: np.ndarray,
    j: np.ndarray,
) -> np.ndarray:
    """``max_u |sum_c kappa_c(u) zeta_c|`` over region ``r`` of image ``i``, draw ``j``.

    ``kappa`` (t, R, 4, P) and ``zs`` (t, j, h w) are C-contiguous: rows are gathered whole.
    """
    t, n_reg, _, n_pix = kappa.shape
    kap = np.take(kappa.reshape(t * n_reg, 4, n_pix), i * n_reg + r, axis=0)  # (s, 4, P)
    base = (i * zs.shape[1] + j) * zs.shape[2]
    zc = np.take(zs, base[:, None] + corners[r])  # (s, 4): flat indices into zs
    z = np.einsum("scp,sc->sp", kap, zc)
    return np.abs(z, out=z).max(1)


def _upper_bounds(lz: torch.Tensor, kcell: torch.Tensor, draws_t: torch.Tensor) -> torch.Tensor:
    """``max_j K_j |zeta_j|`` (b, n) per image and draw: an upper bound of ``max_u |z*(u)|``.

    One product per image (batched, so an image's numbers do not depend on its chunk) into a
    reused buffer, then in-place ``abs`` and a reduction over the cells.
    """
    b, hw, k = lz.shape
    scaled = (lz * (kcell * (1 + 1e-4))[..., None]).float()  # margin for float32 rounding
    buf = torch.empty(b, hw, draws_t.shape[1])
    torch.matmul(scaled, draws_t.expand(b, k, -1), out=buf)
    return buf.abs_().amax(1)


def _sim_thresholds(
    v: torch.Tensor, se_pix: torch.Tensor, reg: _Regions, draws: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``(1 - alpha)`` quantile of ``max_u |z*(u)|`` over the draws, per image: (b,) float64.

    The interpolated quantile only needs the ``m``-th and ``(m - 1)``-th largest maxima,
    ``m = n - floor((1 - alpha)(n - 1))``. Every draw gets the cheap bound of
    :func:`_upper_bounds`; the ``j`` draws with the largest bounds are bracketed
    (:func:`_best_region`), ``j`` doubling until the ``m``-th largest lower bound reaches the
    largest bound left out (those draws are then below rank ``m``). Of the bracketed draws,
    only those whose bracket can reach ranks ``m - 1 .. m`` are computed exactly; the others
    stand in with a value on their side of those ranks. The two order statistics, hence the
    quantile, are those of all ``n`` exact maxima.
    """
    b, h, w, _ = v.shape
    n = draws.shape[0]
    se_cells = torch.linalg.vector_norm(v, dim=3).reshape(b, h * w)
    inv_cells = torch.where(se_cells > 0, 1.0 / se_cells.clamp_min(1e-300), 0.0)
    lz = field_loadings(v) * inv_cells[..., None]  # cell z values: zeta = lz g
    kappa, bound = _region_kappa(se_cells, se_pix, reg)
    kcell = torch.zeros(b, h * w, dtype=torch.float64).scatter_reduce_(
        1, reg.corners.reshape(1, -1).expand(b, -1), bound.repeat_interleave(4, dim=1), "amax")
    ub = _upper_bounds(lz, kcell, draws.T)
    lz32, kappa, bound = lz.float(), np.ascontiguousarray(kappa.numpy()), bound.numpy()
    corners = reg.corners.numpy()
    m = n - math.floor((1 - alpha) * (n - 1))
    vals = np.full((b, n), -1.0)  # below every maximum (>= 0)
    todo, j = np.arange(b), min(n, m + m // 2 + 16)
    while todo.size:
        order = torch.topk(ub[todo], min(n, j + 1), dim=1).indices
        zt = torch.matmul(draws[order[:, :j]], lz32[todo].transpose(1, 2)).double().numpy()
        lo, rb = _best_region(zt, kappa[todo], bound[todo], corners)  # zt: (t, j, hw)
        lam = np.partition(lo, j - m, axis=1)[:, j - m]  # m-th largest lower bound
        done = np.ones(todo.size, dtype=bool)
        if j < n:
            done = lam >= ub[todo].gather(1, order[:, j:]).squeeze(1).numpy()
        lo, rb, zt, lam = lo[done], rb[done], zt[done], lam[done]
        hi = np.maximum(lo, rb.max(2))
        mu = np.partition(hi, j - m + 1, axis=1)[:, j - m + 1] if m > 1 else np.inf
        mu = np.broadcast_to(mu, lam.shape)[:, None]
        cand = (hi > lo) & (hi >= lam[:, None]) & (lo <= mu)
        _refine(lo, rb, zt, kappa[todo[done]], corners, cand)
        rows = todo[done][:, None]
        vals[rows, order[done, :j].numpy()] = np.where((hi > lo) & ~cand & (lo > mu), np.inf, lo)
        todo, j = todo[~done], min(n, 2 * j)
    return torch.quantile(torch.from_numpy(vals), 1 - alpha, dim=1)


def _all_class_se_z(
    cells: np.ndarray,
    factors: list[np.ndarray],
    raw: np.ndarray,
    wy: tuple[np.ndarray, np.ndarray],
    wx: tuple[np.ndarray, np.ndarray],
    crit: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SE, z and pointwise mask of all classes at once (the path without simulation).

    Same algebra as :func:`quadratic_upsample`, batched over classes: the factors are stacked
    (zero rows pad every rank to the largest, adding exact zeros to the inner products), so
    ``v = R a_i`` of all classes is one product per image chunk; the five neighbour fields are
    pad-free shifted slices reduced by ``einsum`` (no product temporaries); and the
    interpolation is ``[y0 y1] [[d, e], [f, (g + a) / 2]] [x0 x1]'``, written straight into
    the ``(N, C, H, W)`` output. NumPy throughout: for these small products and elementwise
    steps it is faster than torch; call it under a one-thread BLAS limit.

    Parameters
    ----------
    cells : ndarray, shape (p + 1, N, h, w)
        Channels first (the intercept share, then the feature maps), float64, contiguous.
    factors : list of ndarray
        ``R_c`` (r_c, p + 1) per class.
    raw : ndarray, shape (N, C, H, W)
    wy, wx : pairs of ndarrays
        :func:`quadratic_weights` of the interpolation matrices.
    crit : float
        Pointwise critical value.

    Returns
    -------
    se, z : ndarray, shape (N, C, H, W)
    mask : ndarray of bool, shape (N, C, H, W)
        ``|z| > crit``.
    """
    k, n, h, w = cells.shape
    n_cls = raw.shape[1]
    r = max(f.shape[0] for f in factors)
    fac = np.zeros((n_cls, r, k))
    for i, f in enumerate(factors):
        fac[i, : f.shape[0]] = f
    fac = fac.reshape(n_cls * r, k)
    y_cat = np.concatenate(wy, axis=1)  # (H, 2h - 1)
    x_cat_t = np.ascontiguousarray(np.concatenate(wx, axis=1).T)  # (2w - 1, W)
    se, z = np.empty(raw.shape), np.empty(raw.shape)
    mask = np.empty(raw.shape, dtype=bool)
    per = max(1, min(n, _SE_ALL_CHUNK_BYTES // (8 * h * w * n_cls * r)))
    flat = cells.reshape(k, n * h * w)
    v_buf = np.empty((n_cls * r, per * h * w))
    # neighbour pairs as flat shifts within a chunk: (0,0), (0,1), (1,0), (1,1), (1,-1); pairs
    # that wrap to the next row or image, or run past the end, are sliced off below
    shifts = [0] + ([1] if w > 1 else []) + ([w, w + 1, w - 1] if h > 1 and w > 1 else
                                               [w] if h > 1 else [])
    f_buf = np.empty((5, n_cls, per * h * w))
    blk_buf = np.empty((per, n_cls, 2 * h - 1, 2 * w - 1))
    tmp = np.empty((per, *raw.shape[1:]))
    for s in range(0, n, per):
        b = min(per, n - s)
        m = b * h * w
        v = np.matmul(fac, flat[:, s * h * w : s * h * w + m], out=v_buf[:, :m])
        v = v.reshape(n_cls, r, m)
        fields = f_buf[:, :, :m]
        for i, sh in enumerate(shifts):  # one long inner loop per (class, rank) pair
            np.einsum("crm,crm->cm", v[:, :, : m - sh], v[:, :, sh:], out=fields[i, :, : m - sh])
        fields = fields.reshape(5, n_cls, b, h, w).transpose(0, 2, 1, 3, 4)  # (5, b, C, h, w)
        # block matrix [[d, e], [f, (g + anti) / 2]] of every image and class
        blk = blk_buf[:b]
        blk[:, :, :h, :w] = fields[0]
        if w > 1:
            blk[:, :, :h, w:] = fields[1, ..., :-1]
        if h > 1 and w > 1:
            # anti(y, x) = v(y, x + 1)' v(y + 1, x): the shift w - 1 pair starting at x + 1
            np.add(fields[3, ..., :-1, :-1], fields[4, ..., :-1, 1:], out=blk[:, :, h:, w:])
            blk[:, :, h:, w:] /= 2
        if h > 1:
            blk[:, :, h:, :w] = fields[2 if w > 1 else 1, ..., :-1, :]
        # x first (one folded product), then y straight into the output
        rows = np.matmul(blk, x_cat_t)
        out, zc = se[s : s + b], z[s : s + b]
        np.matmul(y_cat, rows, out=out)
        low = out.min()
        if not low >= 0:  # rounding can leave tiny negative squares (NaN stays NaN)
            np.maximum(out, 0.0, out=out)
        np.sqrt(out, out=out)
        with np.errstate(divide="ignore", invalid="ignore"):  # SE 0: z fixed just below
            np.divide(raw[s : s + b], out, out=zc)
        if not low > 0:  # no SE, no z (0 by convention)
            zc[out <= 0] = 0.0
        np.greater(np.abs(zc, out=tmp[:b]), crit, out=mask[s : s + b])
    return se, z, mask


def uncertainty(
    acts: torch.Tensor,
    covs: np.ndarray,
    class_ids: list[int],
    raw: np.ndarray,
    share: float,
    size: tuple[int, int],
    alpha: float,
    simultaneous: bool,
    n_sim: int,
    seed: int,
) -> dict[str, Any]:
    """SE, z, masks and simultaneous thresholds of the maps ``raw``.

    Parameters
    ----------
    acts : Tensor, shape (N, p, h, w)
        Feature maps (float64).
    covs : ndarray, shape (C, p + 1, p + 1)
        Covariance of each mapped class's coefficients (intercept first).
    class_ids : list of int
        Each mapped class's column among the coefficients (seeds its draws).
    raw : ndarray, shape (N, C, H, W)
        Linear maps at the output resolution ``size``.
    share : float
        Intercept share per location (0 or 1).
    size : (int, int)
    alpha : float
    simultaneous : bool
    n_sim, seed : int

    Returns
    -------
    dict
        ``se, z, mask_pointwise, pointwise_threshold`` and, when ``simultaneous``,
        ``sim_threshold`` (N, C) and ``mask_simultaneous``.
    """
    n, p, h, w = acts.shape
    n_cls = len(class_ids)
    uy, ux = interp_matrix(h, size[0]), interp_matrix(w, size[1])
    wy, wx = quadratic_weights(uy), quadratic_weights(ux)
    crit = float(stats.norm.ppf(1 - alpha / 2))
    if not simultaneous:
        # all classes at once; the simulation below keeps its per-class path and seeded draws
        aug = np.empty((p + 1, n, h, w))  # channels first, images next: cells are columns
        aug[0] = share
        aug[1:] = acts.permute(1, 0, 2, 3).numpy()
        quad = [tuple(t.numpy() for t in pair) for pair in (wy, wx)]
        with _one_blas_thread():
            factors = [sqrt_factor(c) for c in covs]
            se, z, mask_p = _all_class_se_z(aug, factors, np.ascontiguousarray(raw), *quad, crit)
        return {"se": se, "z": z, "mask_pointwise": mask_p, "pointwise_threshold": crit}
    with _one_blas_thread():
        factors = [torch.from_numpy(sqrt_factor(c)) for c in covs]
    # channels last, cells flattened: v = R_c a_i is then one matrix product per class
    cells = acts.permute(0, 2, 3, 1).reshape(n * h * w, p)
    raw_t = torch.from_numpy(raw)
    se, z = torch.empty_like(raw_t), torch.empty_like(raw_t)
    mask_p = torch.empty(raw_t.shape, dtype=torch.bool)
    mask_s = torch.empty(raw_t.shape, dtype=torch.bool)
    thr = np.full((n, n_cls), np.nan)
    per_se = max(1, _SE_CHUNK_BYTES // (8 * h * w * max(f.shape[0] for f in factors)))
    reg = _regions(uy, ux)
    per_sim = max(1, min(_SIM_CHUNK_BYTES // (4 * n_sim * h * w),
                         _KAPPA_CHUNK_BYTES // (32 * reg.weights.shape[0] * reg.weights.shape[1])))
    for i, (j, fac) in enumerate(zip(class_ids, factors)):
        k = min(fac.shape[0], h * w)  # rank of the cell field (see field_loadings)
        gen = np.random.default_rng([seed, j])  # one seeded stream per class column
        draws = torch.from_numpy(gen.standard_normal((n_sim, k))).float()
        for s in range(0, n, per_se):
            v = torch.matmul(cells[s * h * w : (s + per_se) * h * w], fac[:, 1:].T)
            if share:
                v += share * fac[:, 0]
            v = v.reshape(-1, h, w, fac.shape[0])  # (b, h, w, r)
            b = v.shape[0]
            se_c = quadratic_upsample(v, wy, wx).clamp_min_(0).sqrt_()
            z_c = raw_t[s : s + b, i] / se_c
            if se_c.amin() <= 0:  # no SE, no z (0 by convention)
                z_c = torch.where(se_c > 0, z_c, 0.0)
            se[s : s + b, i], z[s : s + b, i] = se_c, z_c
            z_c.abs_()
            mask_p[s : s + b, i] = z_c > crit
            q = torch.cat([
                _sim_thresholds(v[t : t + per_sim], se_c[t : t + per_sim], reg, draws, alpha)
                for t in range(0, b, per_sim)
            ])
            thr[s : s + b, i] = q.numpy()
            mask_s[s : s + b, i] = z_c > q[:, None, None]
    return {
        "se": se.numpy(), "z": z.numpy(), "mask_pointwise": mask_p.numpy(),
        "pointwise_threshold": crit, "sim_threshold": thr, "mask_simultaneous": mask_s.numpy(),
    }
