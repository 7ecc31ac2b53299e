"""The numeric kernels (engine, Parquet/Dask refits) import without torch (Dask workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, sys
import glminterp
import glminterp.engine, glminterp.scale  # what Dask workers and Parquet readers load
heavy = sorted(m for m in ("torch", "torchvision", "matplotlib", "statsmodels") if m in sys.modules)
before = "torch" in sys.modules
glminterp.GapCNN  # a public name still resolves, and only then loads torch
print(json.dumps({"heavy": heavy, "before": before, "after": "torch" in sys.modules}))
"""


def test_kernels_import_without_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"heavy": [], "before": False, "after": True}


def test_lazy_namespace_lists_public_names():
    import glminterp

    assert set(glminterp.__all__) <= set(dir(glminterp))
    assert glminterp.SeparationError.__name__ == "SeparationError"
    try:
        glminterp.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:  # pragma: no cover
        raise AssertionError("unknown names must raise AttributeError")
