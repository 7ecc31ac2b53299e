"""The scripts in analyses/ are thin, runnable entry points to the studies."""

import subprocess
import sys
from pathlib import Path

import pytest

from glminterp.studies import STUDIES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_each_study_has_a_script(study):
    text = (ROOT / "analyses" / f"{study}.py").read_text()
    assert f'main(["run", "{study}", *sys.argv[1:]])' in text


def test_script_runs_as_a_command():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "analyses" / "mnist_gap_cnn.py"), "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: glminterp run" in proc.stdout and "--seed" in proc.stdout


def test_idx_script_without_path_fails_clearly(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "analyses" / "mnist_idx.py"), "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode != 0 and "idx" in proc.stderr.lower()
    assert not (tmp_path / "mnist_idx").exists()
