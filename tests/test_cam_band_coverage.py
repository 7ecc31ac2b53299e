"""CAM bands cover a known truth (benchmarks/cam_band_coverage.py, small): the simulated
threshold at the default draws matches the oracle's, and both cover near 0.95."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "cam_band_coverage.py"


def _bench():
    spec = importlib.util.spec_from_file_location("cam_band_coverage", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_cam_band_coverage_with_oracle_and_default_threshold():
    bench = _bench()
    df = bench.run(1000, 40, (2000, 20_000))
    se = df.std(ddof=1) / np.sqrt(len(df))
    for col in ("pointwise", "sim 20000", "sim 2000"):
        # the replicate standard error, plus 0.01 for the known small-sample Wald shortfall
        assert abs(df[col].mean() - 0.95) < 3 * se[col] + 0.01, (col, df[col].mean(), se[col])
    # paired (same refit, other draws): the Monte-Carlo error of 2,000 draws is small
    assert abs((df["sim 2000"] - df["sim 20000"]).mean()) < 0.005
