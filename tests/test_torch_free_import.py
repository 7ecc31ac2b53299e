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


_REFIT_PROBE = """
import sys
import glminterp.refit, glminterp.scale, glminterp.engine
from glminterp.refit import OutputLayerGLM, RefitResult, refit_output_layer  # public names
from glminterp.head import Head, reference_to_sum_to_zero_map  # torch-free part of the head
loaded = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
if loaded:
    sys.exit("importing the refit loaded " + ", ".join(loaded))
from glminterp.head import detect_head  # noqa: E402  (detection loads torch when called)
print("ok", "torch" in sys.modules)
"""


def test_refit_imports_without_torch():
    """A Dask worker or a Parquet-only refit session loads the refit without torch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _REFIT_PROBE], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    assert out.returncode == 0, f"torch-free refit import failed: {out.stderr.strip()[-2000:]}"
    assert out.stdout.split() == ["ok", "False"]


def test_detect_head_still_works_through_the_torch_free_module(mlp_digits, digits):
    from glminterp import head as head_module

    h = head_module.detect_head(mlp_digits, digits.images[:4])
    assert (h.name, h.input_layer, h.link) == ("out", "act1", "softmax")


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
