"""The README's Python examples run as written and give a usable refit and CAM."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the example writes acts.parquet
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile("\n".join(blocks), str(README), "exec"), ns)  # noqa: S102
    res, cam = ns["res"], ns["cam"]
    assert (tmp_path / "acts.parquet").is_file()
    assert res.n_obs == 1500 and np.isfinite(res.coefficients["se"]).all()
    lr = res.unit_lr_tests()
    assert lr["converged"].all() and np.isfinite(lr["p"]).all()
    assert cam.maps.shape == cam.se.shape == (8, 10, 28, 28)
    assert np.isfinite(cam.z).all()
