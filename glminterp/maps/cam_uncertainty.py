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

Simultaneous bands (``band=``)
------------------------------
A CAM is estimated at the ``h x w`` feature cells; the upsampled map is a fixed interpolation of
them with weights ``w_c(u) >= 0`` summing to 1 (bilinear, ``align_corners=False``), so it
carries no information the cells do not. Two simultaneous bands are offered; both are valid
for the upsampled map, and in general neither lies inside the other.

``band="cells"`` (default). The threshold ``t`` is the ``(1 - alpha)`` quantile of
``max_c |zeta_c|`` over the cells, ``zeta_c = a_c' (beta* - beta_hat) / SE_c``; at a pixel the
band is ``raw(u) +- t * band_se(u)`` with ``band_se = sum_c w_c(u) SE_c`` (the interpolated
cell SEs). If ``|v_c - m_c| <= t SE_c`` at every cell (``m`` the true map), then at every pixel
``|v(u) - m(u)| = |sum_c w_c (v_c - m_c)| <= t sum_c w_c SE_c``: the band holds at all pixels
whenever it holds at all cells, so its simultaneous coverage over the upsampled map is at least
the cells' ``1 - alpha``. It is conservative between cells (``band_se >= SE(u)`` by the
triangle inequality, equal where a pixel coincides with a cell) and narrower near the cells
(``t`` is a maximum over ``h w`` cells, not over the finer pixel grid). The simulation lives
in the cells' ``h w``-dimensional space: with ``V`` the ``h w x r`` channels ``R_c a_c``
(``R_c' R_c = Sigma_c``, :func:`cov_factor`: Cholesky when positive definite), the cell field
is ``L g`` with ``L = V`` (draws ``g = e`` in coefficient space) when ``r <= h w`` and ``L``
the Cholesky factor of the cells' covariance ``V V' = A' Sigma_c A`` otherwise
(:func:`field_loadings`): ``h w`` numbers per draw, whatever ``p`` and the output size.
Projecting the covariance onto the cells (``V``, ``p^2 h w`` per image and class, one float64
product: :func:`cell_channels`) is the only ``p``-dependent step; the pixel SEs come from the
same Gram matrix ``V V'`` (:func:`quadratic_upsample_gram`). The threshold is brute force over
every draw (:func:`cell_thresholds`); the tests compare it with a direct simulation from
``A' Sigma_c A`` with the same draws.

``band="pixels"``. The threshold is the ``(1 - alpha)`` quantile of ``max_u |z*(u)|`` over
the upsampled pixels, with ``z*(u) = (R_c a(u))' e / SE(u)`` and ``e ~ N(0, I)`` (i.e.
``a(u)' (beta* - beta_hat) / SE(u)`` with ``beta* ~ N(beta_hat, Sigma_c)``; ``R_c`` the
eigen-square-root :func:`sqrt_factor`), and ``band_se = SE``. ``z*`` is a linear map of the
draw: at the feature cells the simulated field is ``f = V e``, and every output pixel
interpolates at most 2 x 2 cells with weights ``w_c(u) >= 0``. Hence
(:func:`_sim_thresholds`):

- the draws live in the cell field's own space: ``e`` itself (``r`` numbers) when ``r <= h w``,
  the same numbers as projecting coefficient draws; for wider factors ``g`` with
  ``f = L g``, ``L L' = V V'`` (:func:`field_loadings`, ``h w`` numbers per draw whatever
  ``p``): the same distribution of ``f``, so of the statistic;
- with the cell z values ``zeta_c = f_c / SE_c``, ``max_u |z*(u)| <= max_c K_c |zeta_c|``
  (:func:`_cell_bounds`): one product per image and a reduction over the ``h w`` cells bound
  every draw, no upsampling;
- the quantile needs only the ``~ alpha n_sim`` largest maxima: they are computed exactly
  (upsampled, pixel by pixel) only for the draws whose bound can reach them.

The result is the quantile of the same exact maxima: equal to the full pixel-space
simulation with the same draws to float32 rounding (:func:`_sim_max_abs_z` and
:func:`_sim_max_abs_z_cells` are those direct references, used by the tests). Its cost still
grows with the output size (exact maxima over ``H W`` pixels for the draws that can rank).

Both bands draw from the stream ``numpy.random.default_rng([seed, class column])`` (shared by
all images of the class; :func:`class_draws`), so results are reproducible and do not depend
on how images are batched.

Without the simulation, :func:`uncertainty` takes a batched path (:func:`_all_class_se_z`) for
factors no wider than the cells (wider ones take the per-class Gram path above): the
factors of all classes are stacked so that one product per image chunk gives every class's
``v``, and the five fields and the interpolation run for all classes at once (same algebra,
equal to the per-class loop to rounding). With it, a per-class loop runs, one seeded stream
of draws per class. The default cell band with factors no wider than the cells
(:func:`_narrow_cell_band`) takes SE, z and the pointwise mask from that batched path too:
its loadings are the channels ``V`` themselves, so only their row norms (the cell SEs) and the
thresholds are per class, with the same draws and loadings as the per-class Gram path.

Cost. An exact simulation with these draws evaluates ``max_c |zeta_c|`` for every draw, image
and class: ``n_sim * h w * min(r, h w)`` multiply-adds per map (float32, near the BLAS peak,
plus two reductions over the cells), whatever the output size and ``p``. Bounds that skip
draws (as in the pixel band) do not pay here: a draw is certified below the quantile only by a
bound on every cell, and the Cauchy-Schwarz slack of any low-rank bound grows like
``sqrt(min(r, h w))``, so most draws would need their exact maximum anyway. For a small
network (a 28 x 28 MNIST CNN, 7 x 7 cells) this floor alone is 3-4x the CAM itself;
``benchmarks/cam.py`` prints it.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from threadpoolctl import ThreadpoolController

# image chunks: the feature-resolution factor channels of one class (float64) ...
_SE_CHUNK_BYTES = 32 * 2**20
# ... and the float32 blocks of the simulation: (images, cells, draws) of the bounds, sized to
# stay in cache, and (images, draws, pixels) of the exact maxima of ~ n_sim / 10 draws (4x)
_SIM_CHUNK_BYTES = 8 * 2**20
# ... and the factor channels of all classes at once (fast path), sized to stay in L2 (but
# at least _SE_ALL_MIN_COLS cells per product: wide factors are then streamed once per chunk)
_SE_ALL_CHUNK_BYTES = 2**20
_SE_ALL_MIN_COLS = 256
# row blocks of a triangular coefficient factor (cell_channels)
_TRI_BLOCK = 96

BANDS: tuple[str, ...] = ("cells", "pixels")


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


def cov_factor(cov: np.ndarray) -> np.ndarray:
    """``R`` with ``R.T @ R = cov``: the upper Cholesky factor, or :func:`sqrt_factor`.

    Cholesky costs a third of an eigendecomposition's flops and is much faster in practice
    (p = 512: ~2 ms against ~100 ms); a covariance that is not numerically positive definite
    (rank-deficient, zero) falls back to the eigen-square-root with its null directions dropped.
    """
    lower, info = torch.linalg.cholesky_ex(torch.from_numpy((cov + cov.T) / 2))
    if int(info) == 0:
        return lower.T.numpy()
    return sqrt_factor(cov)


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

    return _combine_fields(field, h, w, wy, wx)


def quadratic_upsample_gram(
    gram: torch.Tensor, h: int, w: int, wy: tuple[torch.Tensor, torch.Tensor],
    wx: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """:func:`quadratic_upsample` from the cells' Gram matrices ``V V'`` (B, h w, h w).

    The five neighbour fields are diagonals of the Gram matrix (offsets 0, 1, w, w + 1,
    w - 1), so once it is formed (the cell band needs it anyway) the squared pixel SEs cost
    nothing that depends on the rank of the factor.
    """
    b, hw, _ = gram.shape

    def field(shift: int) -> torch.Tensor:
        out = torch.zeros(b, hw, dtype=gram.dtype)
        if shift < hw:
            out[:, : hw - shift] = torch.diagonal(gram, shift, dim1=1, dim2=2)
        return out.reshape(b, h, w)

    return _combine_fields(field, h, w, wy, wx)


def _combine_fields(field, h: int, w: int, wy, wx) -> torch.Tensor:
    """``sum_{i, j} w_i w_j v_i' v_j`` per pixel from the neighbour fields ``field(shift)``."""
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
def field_loadings(v: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
    """``L`` (b, h w, k) with ``L L' = V V'``: the cell field ``f = V e`` is ``L g``, ``g ~ N(0, I_k)``.

    With rank ``r <= h w`` this is ``V`` itself (``g`` are the coefficient-space draws); wider
    factors are reduced to the ``h w x h w`` Cholesky factor of the cells' covariance (an
    eigen-square-root where it is singular), so the cost per draw is ``h w`` whatever ``r``.
    ``gram``, when given, is ``V V'`` (b, h w, h w), already computed.
    """
    b, h, w, r = v.shape
    vf = v.reshape(b, h * w, r)
    if r <= h * w:
        return vf
    if gram is None:
        gram = torch.matmul(vf, vf.transpose(1, 2))
    fac, info = torch.linalg.cholesky_ex(gram)
    bad = info > 0
    if bad.any():  # singular (dead cells, repeated activations): eigen-square-root
        d, q = torch.linalg.eigh(gram[bad])
        fac[bad] = q * d.clamp_min(0).sqrt()[:, None, :]
    return fac


def _cell_bounds(
    se_cells: torch.Tensor, se_pix: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor
) -> torch.Tensor:
    """``K_c`` (b, h w): ``max_u |z*(u)| <= max_c K_c |zeta_c|`` for every draw.

    A pixel interpolates cells with weights ``w_c(u) >= 0``, so ``|z*(u)| = |sum_c w_c(u)
    SE_c zeta_c| / SE(u) <= max_c |zeta_c| (U SE_cells)(u) / SE(u)`` over its cells; ``K_c`` is
    the largest such ratio over the pixels that cell ``c`` enters (a rectangle).
    """
    ratio = torch.matmul(uy, torch.matmul(se_cells, ux.T))
    ratio = torch.where(se_pix > 0, ratio / se_pix.clamp_min(1e-300), 0.0)  # (b, H, W)
    rows = torch.stack([ratio[:, uy[:, i] > 0].amax(1) for i in range(uy.shape[1])], 1)
    return torch.stack([rows[:, :, ux[:, i] > 0].amax(2) for i in range(ux.shape[1])], 2)


def _upper_bounds(lz: torch.Tensor, kcell: torch.Tensor, draws_t: torch.Tensor) -> torch.Tensor:
    """``max_c K_c |zeta_c|`` (b, n) per image and draw: an upper bound of ``max_u |z*(u)|``.

    One product per image (batched, so an image's numbers do not depend on its chunk) into a
    reused buffer, then in-place ``abs`` and a reduction over the cells.
    """
    b, hw, k = lz.shape
    scaled = (lz * (kcell.reshape(b, hw) * (1 + 1e-4))[..., None]).float()  # float32 margin
    buf = torch.empty(b, hw, draws_t.shape[1])
    torch.matmul(scaled, draws_t.expand(b, k, -1), out=buf)
    return buf.abs_().amax(1)


def _exact_max(
    f: torch.Tensor, inv_pix: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor
) -> torch.Tensor:
    """``max_u |z*(u)|`` (t, j) of the simulated cell fields ``f`` (t, j, h, w), float32.

    Upsampled (two small products) and scaled by ``1 / SE(u)`` (0 where the SE is 0), as in
    the pixel-space simulation.
    """
    t, j, h, w = f.shape
    step = max(1, _SIM_CHUNK_BYTES // (t * 4 * uy.shape[0] * ux.shape[0]))  # bounded memory
    out = []
    for s in range(0, j, step):
        q = torch.matmul(uy, torch.matmul(f[:, s : s + step], ux.T))  # (t, step, H, W)
        q.mul_(inv_pix[:, None]).abs_()
        out.append(q.flatten(2).amax(2))
    return torch.cat(out, 1)


def _sim_thresholds(
    v: torch.Tensor, se_pix: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor,
    draws: torch.Tensor, alpha: float,
) -> torch.Tensor:
    """``(1 - alpha)`` quantile of ``max_u |z*(u)|`` over the draws, per image: (b,) float64.

    The interpolated quantile only needs the ``m`` largest maxima,
    ``m = n - floor((1 - alpha)(n - 1))``. Every draw gets the cheap bound of
    :func:`_upper_bounds`; the maxima are computed exactly (:func:`_exact_max`) in order of
    decreasing bound: a first block, then (if the ``m``-th largest exact maximum so far, a
    lower bound of the true one, is below the largest bound left out) every draw whose bound
    reaches it. The draws left out are then at most that order statistic, so the quantile is
    that of all ``n`` exact maxima.
    """
    b, h, w, _ = v.shape
    n = draws.shape[0]
    se_cells = torch.linalg.vector_norm(v, dim=3)  # (b, h, w)
    inv_cells = torch.where(se_cells > 0, 1.0 / se_cells.clamp_min(1e-300), 0.0)
    fac = field_loadings(v)  # cell field f = fac g
    ub = _upper_bounds(fac * inv_cells.reshape(b, h * w, 1),
                       _cell_bounds(se_cells, se_pix, uy, ux), draws.T)
    fac32, uy32, ux32 = fac.float(), uy.float(), ux.float()
    inv_pix = torch.where(se_pix > 0, 1.0 / se_pix.clamp_min(1e-300), 0.0).float()
    m = n - math.floor((1 - alpha) * (n - 1))
    top = torch.full((b, m), -1.0)  # the m largest exact maxima so far, descending
    todo, s, j = torch.arange(b), 0, min(n, m + m // 4 + 8)
    ub_sorted, order = torch.topk(ub, min(n, 2 * j + 1), dim=1)  # usually enough; else all
    while todo.numel():
        if j >= order.shape[1] and order.shape[1] < n:
            ub_sorted, order = torch.sort(ub, dim=1, descending=True, stable=True)
        idx = order[todo, s:j]
        f = torch.matmul(draws[idx], fac32[todo].transpose(1, 2))  # (t, j - s, hw)
        mx = _exact_max(f.view(todo.numel(), -1, h, w), inv_pix[todo], uy32, ux32)
        top[todo] = torch.topk(torch.cat([top[todo], mx], 1), m, dim=1).values
        if j == n:
            break
        lam = top[todo, -1]  # a lower bound of the m-th largest maximum
        todo = todo[lam < ub_sorted[todo, j]]  # a draw left out could still rank
        # next: every draw whose bound reaches that lower bound (those alone can rank)
        s, j = j, int((ub[todo] >= top[todo, -1:]).sum(1).max()) if todo.numel() else n
    return _lerp_quantile(top.double(), n, 1 - alpha)


def _lerp_quantile(top: torch.Tensor, n: int, q: float) -> torch.Tensor:
    """``torch.quantile(x, q)`` (linear) of ``n`` values from their ``m`` largest ``top``.

    The rank ``q (n - 1)`` falls between the ``m``-th and ``(m - 1)``-th largest values; the
    interpolation is ``torch.lerp``'s, so the result equals ``torch.quantile`` on all values.
    """
    pos = q * (n - 1)
    m = n - math.floor(pos)
    below = top[:, m - 1]
    above = top[:, m - 2] if m >= 2 else below
    return _lerp_pair(below, above, pos)


def _lerp_pair(below: torch.Tensor, above: torch.Tensor, pos: float) -> torch.Tensor:
    """``torch.quantile``'s linear interpolation between the sorted values at ranks
    ``floor(pos)`` (``below``) and ``floor(pos) + 1`` (``above``), as ``torch.lerp``."""
    weight = pos - math.floor(pos)
    if weight < 0.5:
        return below + weight * (above - below)
    return above - (above - below) * (1 - weight)


# ------------------------------------------------------------ simultaneous band at the cells
def class_draws(seed: int, column: int, n_sim: int, k: int) -> torch.Tensor:
    """The seeded standard normal draws of one class: ``(k, n_sim)`` float32.

    Stream ``numpy.random.default_rng([seed, column])`` (shared by all images of the class, and
    by both bands), ``n_sim`` rows of ``k`` numbers, transposed so that the cell fields of an
    image are one product ``Z @ draws``.
    """
    gen = np.random.default_rng([seed, column])
    return torch.from_numpy(gen.standard_normal((n_sim, k))).float().T.contiguous()


def cell_z_loadings(
    v: torch.Tensor, se_cells: torch.Tensor, gram: torch.Tensor | None = None
) -> torch.Tensor:
    """``Z`` (b, h w, k) float32: the cell z field of a draw ``g`` is ``zeta = Z g``.

    ``Z = diag(1 / SE_c) L`` with ``L L' = V V'`` (:func:`field_loadings`): row ``c`` has norm
    1 (0 for a cell without uncertainty), so every ``zeta_c`` is N(0, 1) and their correlation
    is that of the cells' estimates.
    """
    b, h, w, _ = v.shape
    inv = torch.where(se_cells > 0, 1.0 / se_cells.clamp_min(1e-300), 0.0)
    return (field_loadings(v, gram) * inv.reshape(b, h * w, 1)).float()


def cell_thresholds(z: torch.Tensor, draws_t: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha)`` quantile of ``max_c |zeta_c|`` over the draws, per image: (b,) float64.

    Brute force, one image at a time so that everything stays in cache and an image's numbers
    do not depend on its block: one product ``Z_n @ draws`` ((hw, k) @ (k, n_sim)), the maximum
    of ``|zeta|`` over the cells as ``max(max zeta, -min zeta)`` (two streaming reductions, no
    pass for ``abs``), and the two order statistics the interpolated quantile needs from one
    partial sort (:func:`_lerp_pair`, equal to ``torch.quantile`` on all ``n_sim`` maxima).
    (Splitting a lower-triangular ``Z_n`` into row blocks saves a quarter of the flops but
    measured no faster: the products are this small.)
    """
    b, hw, _ = z.shape
    n = draws_t.shape[1]
    pos = (1 - alpha) * (n - 1)
    lo_rank = math.floor(pos)  # the quantile lies between sorted[lo_rank] and sorted[lo_rank + 1]
    buf = torch.empty(hw, n)
    f = buf.numpy()
    hi, lo = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    pair = np.empty((b, 2))
    for t in range(b):
        torch.matmul(z[t], draws_t, out=buf)
        np.maximum.reduce(f, axis=0, out=hi)
        np.minimum.reduce(f, axis=0, out=lo)
        np.maximum(hi, np.negative(lo, out=lo), out=hi)
        hi.partition(lo_rank)  # in place (a tuple of two ranks sorts twice: slower)
        pair[t, 0] = hi[lo_rank]
        pair[t, 1] = hi[lo_rank + 1 :].min() if lo_rank + 1 < n else hi[lo_rank]
    return _lerp_pair(torch.from_numpy(pair[:, 0]), torch.from_numpy(pair[:, 1]), pos)


def upsample_cells(x: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor) -> torch.Tensor:
    """``U_y x U_x'`` per image: (b, h, w) -> (b, H, W), the bilinear map of cell values."""
    return torch.matmul(uy, torch.matmul(x, ux.T))


def cell_channels(cells_t: torch.Tensor, fac: torch.Tensor, share: float) -> torch.Tensor:
    """``V' = R [share; A]`` for a block of cells ``A`` (p, M): (r, M), float64.

    The only step whose cost grows with ``p`` (``p r`` per cell). An upper-triangular ``R``
    (Cholesky) is multiplied by row blocks, each against the channels it does not zero out
    (about 60% of the dense product's flops), straight into its rows of the result; column
    ``m`` depends only on cell ``m``, so the numbers do not depend on the block of cells.
    """
    r, k = fac.shape
    out = torch.empty(r, cells_t.shape[1], dtype=fac.dtype)
    if r != k or r < 2 * _TRI_BLOCK or torch.tril(fac, -1).any():
        torch.matmul(fac[:, 1:], cells_t, out=out)
    else:  # R[i, j] = 0 for j < i: rows i0.. of R need channels j >= i0 - 1 of the cells
        for i0 in range(0, r, _TRI_BLOCK):
            c0 = max(i0 - 1, 0)
            torch.matmul(fac[i0 : i0 + _TRI_BLOCK, 1 + c0 :], cells_t[c0:],
                         out=out[i0 : i0 + _TRI_BLOCK])
    if share:
        out += share * fac[:, :1]
    return out


def _cell_band_chunk(
    v: torch.Tensor, raw: torch.Tensor, quad: tuple, interp: tuple, draws_t: torch.Tensor,
    alpha: float, crit: float,
) -> dict[str, torch.Tensor]:
    """SE, z, band scale, masks and thresholds of one class on a block of images.

    ``v`` (b, h, w, r) are the factor channels ``R a_i`` at the cells and ``raw`` (b, H, W)
    the upsampled linear maps. The simultaneous band at a pixel is
    ``raw +- t * band_se`` with ``band_se = U SE_cells`` (the interpolated cell SEs).
    """
    b, h, w, r = v.shape
    vf = v.reshape(b, h * w, r)
    gram = torch.matmul(vf, vf.transpose(1, 2))  # the cells' covariance A' Sigma A
    se_pix = quadratic_upsample_gram(gram, h, w, *quad).clamp_min_(0).sqrt_()
    z = raw / se_pix
    if se_pix.amin() <= 0:  # no SE, no z (0 by convention)
        z = torch.where(se_pix > 0, z, 0.0)
    out = {"se": se_pix, "z": z, "mask_pointwise": z.abs() > crit}
    if draws_t is None:  # SE and z only
        return out
    se_cells = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(0).sqrt().reshape(b, h, w)
    thr = cell_thresholds(cell_z_loadings(v, se_cells, gram), draws_t, alpha)
    band = upsample_cells(se_cells, *interp)
    mask_s = (raw.abs() > thr[:, None, None] * band) & (band > 0)
    return out | {"band_se": band, "mask_simultaneous": mask_s, "sim_threshold": thr}


def _cell_band(
    acts: torch.Tensor, covs: np.ndarray, class_ids: list[int], raw: np.ndarray, share: float,
    size: tuple[int, int], alpha: float, n_sim: int, seed: int, crit: float,
    simulate: bool = True, factors: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """:func:`uncertainty` with the simultaneous band at the feature cells (the default).

    One class at a time: the coefficient factor ``R_c`` (:func:`cov_factor`), the cells'
    channels ``v = R_c a_i`` for a block of images (one float64 product, ``p^2 h w`` per image:
    the only ``p``-dependent step), then everything else from the cells' ``h w x h w`` Gram
    matrices or per pixel. ``simulate=False``: SE, z and the pointwise mask only (the path
    without simulation for factors wider than the cells). ``factors``: the :func:`cov_factor`
    of each covariance, when already computed.
    """
    n, p, h, w = acts.shape
    uy, ux = interp_matrix(h, size[0]), interp_matrix(w, size[1])
    quad = (quadratic_weights(uy), quadratic_weights(ux))
    if factors is None:
        with _one_blas_thread():
            factors = [cov_factor(c) for c in covs]
    factors = [torch.from_numpy(f) for f in factors]
    cells_t = acts.permute(1, 0, 2, 3).reshape(p, n * h * w)  # channels first, cells flattened
    raw_t = torch.from_numpy(raw)
    keys = [("se", raw_t.dtype), ("z", raw_t.dtype), ("mask_pointwise", torch.bool)]
    if simulate:
        keys += [("band_se", raw_t.dtype), ("mask_simultaneous", torch.bool)]
    out = {key: torch.empty(raw_t.shape, dtype=dt) for key, dt in keys}
    if simulate:
        out["sim_threshold"] = torch.empty(n, len(class_ids), dtype=torch.float64)
    per = max(1, _SE_CHUNK_BYTES // (8 * h * w * max(f.shape[0] for f in factors)))
    for i, (j, fac) in enumerate(zip(class_ids, factors)):
        k = min(fac.shape[0], h * w)
        draws_t = class_draws(seed, j, n_sim, k) if simulate else None
        for s in range(0, n, per):
            vt = cell_channels(cells_t[:, s * h * w : (s + per) * h * w], fac, share)
            # (b, h, w, r) view of the (r, b h w) block: each image's cells are contiguous
            v = vt.view(fac.shape[0], -1, h, w).permute(1, 2, 3, 0)
            part = _cell_band_chunk(v, raw_t[s : s + v.shape[0], i], quad, (uy, ux), draws_t,
                                    alpha, crit)
            for key, val in part.items():
                out[key][s : s + v.shape[0], i] = val
    return {key: val.numpy() for key, val in out.items()}


def _augmented_cells(acts: torch.Tensor, share: float) -> np.ndarray:
    """``[share; A]`` channels first, images next (cells are columns): (p + 1, N, h, w)."""
    n, p, h, w = acts.shape
    aug = np.empty((p + 1, n, h, w))
    aug[0] = share
    aug[1:] = acts.permute(1, 0, 2, 3).numpy()
    return aug


def _narrow_cell_band(
    acts: torch.Tensor, factors: list[np.ndarray], class_ids: list[int], raw: np.ndarray,
    share: float, size: tuple[int, int], alpha: float, n_sim: int, seed: int, crit: float,
) -> dict[str, Any]:
    """The cell band (:func:`_cell_band`'s numbers) for factors no wider than the cells.

    With ``r_c <= h w`` the cell field of a draw is ``V e`` itself (:func:`field_loadings`), so
    no cells' Gram matrix is needed: SE, z and the pointwise mask of all classes come from the
    batched path without simulation (:func:`_all_class_se_z`), and per class only the channels
    ``V = R_c [share; A]`` (``r_c^2`` per cell), their row norms (the cell SEs) and the seeded
    threshold (:func:`cell_thresholds`, the same draws and loadings as :func:`_cell_band`).
    The band scale and the simultaneous mask are then formed for all classes at once.
    """
    n, p, h, w = acts.shape
    aug = _augmented_cells(acts, share)
    uy, ux = interp_matrix(h, size[0]).numpy(), interp_matrix(w, size[1]).numpy()
    quad = _quadratic_weights_np(h, w, size)
    raw = np.ascontiguousarray(raw)
    flat = aug.reshape(p + 1, n * h * w)
    thr = np.empty((n, len(class_ids)))
    se_cells = np.empty((n, len(class_ids), h, w))
    per = max(1, _SE_CHUNK_BYTES // (8 * h * w * (p + 1)))
    with _one_blas_thread():
        se, z, mask_p = _all_class_se_z(aug, factors, raw, *quad, crit)
        for i, (j, fac) in enumerate(zip(class_ids, factors)):
            draws_t = class_draws(seed, j, n_sim, fac.shape[0])
            for s in range(0, n, per):
                cols = flat[:, s * h * w : (s + per) * h * w]
                v = (fac @ cols).reshape(fac.shape[0], -1, h * w).transpose(1, 2, 0)
                sc = np.sqrt(np.einsum("bcr,bcr->bc", v, v))  # (b, hw): the cell SEs
                with np.errstate(divide="ignore"):
                    inv = np.where(sc > 0, 1.0 / sc, 0.0)
                zl = torch.from_numpy(np.ascontiguousarray(v * inv[..., None], dtype=np.float32))
                thr[s : s + v.shape[0], i] = cell_thresholds(zl, draws_t, alpha).numpy()
                se_cells[s : s + v.shape[0], i] = sc.reshape(-1, h, w)
        band = np.matmul(uy, np.matmul(se_cells, ux.T))  # (N, C, H, W) interpolated cell SEs
    return {"se": se, "z": z, "mask_pointwise": mask_p, "band_se": band,
            "mask_simultaneous": _band_mask(raw, thr, band), "sim_threshold": thr}


def _quadratic_weights_np(h: int, w: int, size: tuple[int, int]) -> list[tuple]:
    """:func:`quadratic_weights` of the row and column interpolations, as numpy arrays."""
    return [tuple(t.numpy() for t in quadratic_weights(interp_matrix(k, big)))
            for k, big in ((h, size[0]), (w, size[1]))]


def _band_mask(raw: np.ndarray, thr: np.ndarray, band: np.ndarray) -> np.ndarray:
    """``|raw| > thr * band`` where ``band > 0`` (N, C, H, W), in two passes over the maps."""
    lim = np.multiply(band, thr[:, :, None, None])
    mask = np.less(lim, np.abs(raw), out=np.empty(raw.shape, dtype=bool))
    if not band.min() > 0:  # no SE, no band (and NaN excluded)
        mask &= band > 0
    return mask


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
    per = max(1, min(n, max(_SE_ALL_CHUNK_BYTES // (8 * h * w * n_cls * r),
                            -(-_SE_ALL_MIN_COLS // (h * w)))))
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
    band: str = "cells",
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
    band : {"cells", "pixels"}
        Simultaneous band: over the feature cells, carried to the pixels by interpolating the
        cell SEs (``band_se``, the default), or over the upsampled pixels with their exact
        SEs (``band_se = se``). See the module docstring.

    Returns
    -------
    dict
        ``se, z, mask_pointwise, pointwise_threshold`` and, when ``simultaneous``,
        ``sim_threshold`` (N, C), ``band_se`` (N, C, H, W) and ``mask_simultaneous``
        (``|raw| > sim_threshold * band_se``).
    """
    n, p, h, w = acts.shape
    crit = float(stats.norm.ppf(1 - alpha / 2))
    if not simultaneous and covs.shape[1] > h * w:
        # wide factors: per class from the cells' Gram matrices (no per-rank field products)
        return _cell_band(acts, covs, class_ids, raw, share, size, alpha, n_sim, seed, crit,
                          simulate=False) | {"pointwise_threshold": crit}
    if not simultaneous:
        # all classes at once; the simulation below keeps its per-class path and seeded draws
        aug = _augmented_cells(acts, share)
        quad = _quadratic_weights_np(h, w, size)
        with _one_blas_thread():
            factors = [cov_factor(c) for c in covs]
            se, z, mask_p = _all_class_se_z(aug, factors, np.ascontiguousarray(raw), *quad, crit)
        return {"se": se, "z": z, "mask_pointwise": mask_p, "pointwise_threshold": crit}
    if band == "cells":
        with _one_blas_thread():
            factors = [cov_factor(c) for c in covs]
        if max(f.shape[0] for f in factors) <= h * w:  # the loadings are the channels
            out = _narrow_cell_band(acts, factors, class_ids, raw, share, size, alpha, n_sim,
                                    seed, crit)
        else:
            out = _cell_band(acts, covs, class_ids, raw, share, size, alpha, n_sim, seed, crit,
                             factors=factors)
        return out | {"pointwise_threshold": crit}
    if band != "pixels":
        raise ValueError(f"band={band!r}; use one of {BANDS}.")
    out = _simulated(acts, covs, class_ids, raw, share, size, alpha, n_sim, seed)
    return out | {"band_se": out["se"], "pointwise_threshold": crit}


def _simulated(
    acts: torch.Tensor, covs: np.ndarray, class_ids: list[int], raw: np.ndarray, share: float,
    size: tuple[int, int], alpha: float, n_sim: int, seed: int,
) -> dict[str, Any]:
    """:func:`uncertainty` with the simultaneous threshold: one class at a time, seeded draws."""
    n, p, h, w = acts.shape
    n_cls = len(class_ids)
    uy, ux = interp_matrix(h, size[0]), interp_matrix(w, size[1])
    wy, wx = quadratic_weights(uy), quadratic_weights(ux)
    crit = float(stats.norm.ppf(1 - alpha / 2))
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
    # bounds of all draws (n_sim per cell), exact maxima of ~ n_sim / 10 draws per pixel
    per_sim = max(1, min(_SIM_CHUNK_BYTES // (4 * n_sim * h * w),
                         4 * _SIM_CHUNK_BYTES // (4 * (n_sim // 10 + 32) * size[0] * size[1])))
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
                _sim_thresholds(v[t : t + per_sim], se_c[t : t + per_sim], uy, ux, draws, alpha)
                for t in range(0, b, per_sim)
            ])
            thr[s : s + b, i] = q.numpy()
            mask_s[s : s + b, i] = z_c > q[:, None, None]
    return {"se": se.numpy(), "z": z.numpy(), "mask_pointwise": mask_p.numpy(),
            "sim_threshold": thr, "mask_simultaneous": mask_s.numpy()}
