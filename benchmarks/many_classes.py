"""Many classes past the full covariance: method='contrasts' / 'class_subset' / 'ovr' / 'auto'.

    python benchmarks/many_classes.py exact        # K=100, p=16: equal the dense computation
    python benchmarks/many_classes.py k100         # K=100, p=256, N=20k: time, peak memory
    python benchmarks/many_classes.py k1000        # K=1000, p=512: 10-class subset refit
    python benchmarks/many_classes.py k1000small   # K=1000, p=8: 20 coefficient SEs, product counts
    python benchmarks/many_classes.py products     # K=1000, p=512: one product, extrapolation
    python benchmarks/many_classes.py all          # each section in its own process

Every section times the public call a user makes (``refit_output_layer``, all checks included)
on synthetic activations, and prints peak resident memory of its process (``ru_maxrss``: run
one section per process, as ``all`` does) and ratios measured in the same run. One BLAS
thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from refit import simulate  # noqa: E402  (benchmarks/refit.py: the shared synthetic design)

from glminterp import engine as E  # noqa: E402
from glminterp.activations import Activations  # noqa: E402
from glminterp.head import Head  # noqa: E402
from glminterp.refit import OutputLayerGLM, refit_output_layer  # noqa: E402


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def acts_of(x: np.ndarray, y: np.ndarray, k: int) -> Activations:
    """Activations with units ``x``, labels ``y`` and a zero softmax head of ``k`` classes."""
    n, p = x.shape
    head = Head(name="out", weight=np.zeros((k, p)), bias=np.zeros(k), link="softmax",
                link_source="benchmark", input_layer="h", classes=tuple(f"c{i}" for i in range(k)))
    index = pd.Index([f"s{i:07d}" for i in range(n)], name="sample_id")
    features = pd.DataFrame(x, index=index, columns=[f"h:{j}" for j in range(p)], copy=False)
    obs = pd.DataFrame({"label": pd.array(y.astype(np.int64), dtype="Int64"), "pred": 0,
                        "split": "refit"}, index=index)
    return Activations(features=features, obs=obs, head=head, layers=("h",),
                       metadata={"pool": "avg"})


def chosen(k: int, p: int, m: int = 20, seed: int = 0) -> list[tuple]:
    """``m`` coefficients / contrasts: half single coefficients, half class differences."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(m):
        a, b = rng.choice(np.arange(1, k), 2, replace=False)
        t = "const" if i % 7 == 0 else f"h:{int(rng.integers(p))}"
        out.append((f"c{a}", f"c{b}", t) if i % 2 else (f"c{a}", t))
    return out


class Seconds(float):
    """Wall seconds of a call, with its process CPU seconds (``cpu``) beside them."""

    cpu: float

    def __format__(self, spec: str) -> str:
        return f"{self.cpu:{spec}} s CPU ({float(self):{spec}} s wall)"


def timed(fn):
    """(result, Seconds) of one call. The machine is shared: with one BLAS thread the CPU
    seconds are about what the call takes on an idle core, the wall seconds what it took."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sec = Seconds(time.perf_counter() - t0)
    sec.cpu = time.process_time() - c0
    return out, sec


def section_exact(n=20_000, p=16, k=100) -> None:
    import statsmodels.api as sm

    x, y = simulate(n, p, k, seed=1)
    acts = acts_of(x, y, k)
    spec = chosen(k, p)
    dense, t_d = timed(lambda: refit_output_layer(acts, method="ml", progress=False))
    mf, t_c = timed(lambda: refit_output_layer(acts, method="contrasts", contrasts=spec,
                                               remedy_kwds={"rtol": 1e-12}, progress=False))
    q = p + 1
    rows = np.zeros((len(spec), q * (k - 1)))
    for i, item in enumerate(spec):
        for cls, sign in zip(item[:-1], (1.0, -1.0)):
            rows[i, (int(cls[1:]) - 1) * q + (0 if item[-1] == "const" else int(item[-1][2:]) + 1)
                 ] += sign
    d_se = np.sqrt(np.einsum("ij,jk,ik->i", rows, dense.cov_params().to_numpy(), rows))
    se_diff = np.max(np.abs(mf.coefficients["se"].to_numpy() / d_se - 1))
    s = [f"c{i}" for i in range(10)]
    sub, t_s = timed(lambda: refit_output_layer(acts, method="class_subset", classes=s,
                                                progress=False))
    keep = y < 10
    own = sm.MNLogit(y[keep], sm.add_constant(x[keep])).fit(method="newton", tol=1e-12, disp=0)
    sub_diff = np.max(np.abs(sub.coefficients["se"].to_numpy()
                             / np.asarray(own.bse).ravel(order="F") - 1))
    print(f"exact: K={k}, N={n}, p={p} ({q * (k - 1)} params; dense covariance fits)")
    print(f"  20 contrasts (method='contrasts') vs the dense inverse (method='ml'): SE max rel "
          f"diff {se_diff:.1e}; time {t_c:.1f} vs {t_d:.1f} (CPU ratio {t_c.cpu / t_d.cpu:.2f})")
    print(f"  10-class subset (method='class_subset', {sub.n_obs} rows, {sub.fit_stats['n_params']}"
          f" params) vs statsmodels MNLogit on the subset rows: SE max rel diff {sub_diff:.1e}; "
          f"{t_s:.1f}")
    print(f"  peak RSS {rss_gb():.2f} GB")


def section_k100(n=20_000, p=256, k=100) -> None:
    x, y = simulate(n, p, k)
    acts = acts_of(x, y, k)
    del x
    n_par = (p + 1) * (k - 1)
    print(f"k100: K={k}, N={n}, p={p}: {n_par} params; the full covariance would need "
          f"{E.covariance_bytes(n_par) / 2**30:.1f} GiB")
    t_base = timed(lambda: OutputLayerGLM.from_activations(acts))[1]  # the checks alone
    res, t = timed(lambda: refit_output_layer(
        acts, method="auto", contrasts=chosen(k, p), remedy_kwds={"max_memory": 2 * 2**30},
        progress=False))
    fs = res.fit_stats
    print(f"  20 contrasts, method='auto' with max_memory=2 GiB -> {fs['estimator']!r}: {t:.1f} "
          f"({t.cpu / t_base.cpu:.0f}x building the checked model, {t_base:.1f}), converged "
          f"{fs['converged']}, fit {fs['cg_n_iter']} iter / {fs['cg_n_hvp_fit']} HVP, solves "
          f"{fs['cg_n_hvp_solve']} column-products; peak RSS so far {rss_gb():.2f} GB")
    print(f"  choice recorded: {fs['estimator_choice']}")
    sub, t_s = timed(lambda: refit_output_layer(acts, method="class_subset",
                                                classes=[f"c{i}" for i in range(10)],
                                                progress=False))
    print(f"  10-class subset: {sub.n_obs} rows, {sub.fit_stats['n_params']} params, {t_s:.1f}, "
          f"converged {sub.converged}; peak RSS {rss_gb():.2f} GB")


def k1000_design(per_s=700, per_other=100, p=512, k=1000, s=10, seed=0):
    """Gaussian classes, shared covariance (the multinomial logit is the true model)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 0.08, (k, p))
    counts = np.where(np.arange(k) % (k // s) == 0, per_s, per_other)
    y = np.repeat(np.arange(k), counts)
    x = mu[y] + rng.standard_normal((len(y), p))
    return x, y, mu, [f"c{i}" for i in range(0, k, k // s)]


def section_k1000(per_s=700, per_other=100, p=512, k=1000) -> None:
    x, y, mu, s = k1000_design(per_s, per_other, p, k)
    acts = acts_of(x, y, k)
    n_par = (p + 1) * (k - 1)
    print(f"k1000: K={k}, p={p}, N={len(y)} ({per_s} rows in each of the 10 subset classes, "
          f"{per_other} in each other class); the full covariance would need "
          f"{E.covariance_bytes(n_par) / 2**40:.1f} TiB")
    del x
    t_base = timed(lambda: OutputLayerGLM.from_activations(acts))[1]  # the checks alone
    res, t = timed(lambda: refit_output_layer(acts, method="class_subset", classes=s,
                                              progress=False))
    tab = res.contrast("c100", "c0")
    print(f"  10-class subset refit: {res.n_obs} rows, {res.fit_stats['n_params']} params, "
          f"{t:.1f} ({t.cpu / t_base.cpu:.1f}x building the checked model of all {len(y)} rows, "
          f"{t_base:.1f}), converged {res.converged}, peak RSS {rss_gb():.2f} GB; "
          "w_c100 - w_c0 on unit 0: "
          f"{tab['coef'].iloc[1]:.3f} (SE {tab['se'].iloc[1]:.3f}), truth "
          f"{mu[100, 0] - mu[0, 0]:.3f}")


def section_k1000small(per=40, p=8, k=1000) -> None:
    x, y, _, _ = k1000_design(per, per, p, k)
    acts = acts_of(x, y, k)
    del x
    res, t = timed(lambda: refit_output_layer(acts, method="contrasts", contrasts=chosen(k, p),
                                              progress=False))
    fs = res.fit_stats
    print(f"k1000small: K={k}, p={p}, N={len(y)}: 20 chosen coefficients/contrasts in {t:.1f}, "
          f"converged {fs['converged']}, fit {fs['cg_n_iter']} iter / {fs['cg_n_hvp_fit']} HVP, "
          f"solves {fs['cg_n_hvp_solve']} column-products; peak RSS {rss_gb():.2f} GB")


def section_products(n_full=700_000, n_slice=20_000, p=512, k=1000, m=20) -> None:
    """One Fisher-vector product and one m-column block at K=1000, p=512, scaled to n_full."""
    from glminterp.refit.contrasts import _block_hvp

    x, y, _, _ = k1000_design(n_slice // k, n_slice // k, p, k)
    codes, _ = E.encode_classes(y)
    q = p + 1
    obj = E.MultinomialObjective(E.array_chunks(x, codes, None, E._auto_chunk(None, q * (k - 1))),
                                 q, k)
    flat = np.zeros(q * (k - 1))
    obj.value_grad(flat)
    v = np.random.default_rng(0).standard_normal((q * (k - 1), m))
    _, t1 = timed(lambda: obj.hvp(flat, v[:, 0]))
    _, tm = timed(lambda: _block_hvp(obj, flat, v))
    scale = n_full / len(y)
    print(f"products: K={k}, p={p}, measured on N={len(y)}: one Fisher-vector product {t1:.2f}, "
          f"one {m}-column block {tm:.2f} ({tm.cpu / t1.cpu:.1f}x one product); at N={n_full} "
          f"(linear in N): {t1.cpu * scale:.0f} s and {tm.cpu * scale:.0f} s CPU")


SECTIONS = {"exact": section_exact, "k100": section_k100, "k1000": section_k1000,
            "k1000small": section_k1000small, "products": section_products}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("section", choices=[*SECTIONS, "all"])
    args = ap.parse_args(argv)
    if args.section == "all":
        for name in SECTIONS:
            subprocess.run([sys.executable, __file__, name], check=True)
        return
    with threadpool_limits(1):
        SECTIONS[args.section]()


if __name__ == "__main__":
    main()
