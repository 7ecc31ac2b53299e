"""Firth refit with profile penalized-likelihood intervals under separation (n=200, 10 units).

Times the public call ``refit_output_layer(acts, family="binomial", remedy="firth")`` with
``pl=True`` (PLR tests and profile intervals for every term) against ``pl=False`` (Wald on the
same penalized fit) measured in the same run, and prints the ratio and seconds per term.

Run: ``.venv/bin/python benchmarks/firth_profile.py``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_glm_synth import make_acts  # noqa: E402

import glminterp as gi  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((200, 10)), 0)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.8).astype(int)  # separated by two units
    acts = make_acts(x, y, link="sigmoid", n_outputs=1)
    times = {}
    for pl in (False, True):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = gi.refit_output_layer(acts, remedy="firth", remedy_kwds={"pl": pl},
                                        progress=False)
            _ = res.coefficients  # the table (with profile intervals) is part of the call
        times[pl] = time.perf_counter() - t0
    n_terms = len(res.terms)
    print(f"separated={res.separated}  terms={n_terms}")
    print(f"pl=False (Wald): {times[False]:.2f} s;  pl=True (PLR + profile CIs): {times[True]:.2f} s"
          f"  = {times[True] / n_terms:.2f} s per term, ratio {times[True] / times[False]:.1f}x")


if __name__ == "__main__":
    main()
