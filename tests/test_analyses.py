"""The scripts in analyses/ are the studies, written with the public analysis API only."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import glminterp as gi
from glminterp.report.studies import STUDIES, StudyConfig, load_study

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = set(gi.__all__) | {"StudyConfig", "study_main", "load_study"}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_each_study_is_a_script_using_the_public_api(study):
    path = ROOT / "analyses" / f"{study}.py"
    tree = ast.parse(path.read_text())
    # only public names: gi.<name> attributes, and the studies module's config/entry helpers
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "gi"}
    assert used and used <= set(gi.__all__), used - set(gi.__all__)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module and n.module.startswith("glminterp") for a in n.names}
    assert imported <= PUBLIC, imported - PUBLIC
    assert not any(isinstance(n, ast.Attribute) and n.attr.startswith("_")
                   and n.attr != "__main__" for n in ast.walk(tree))
    module = load_study(study)
    assert isinstance(module.DEFAULTS, StudyConfig) and callable(module.run)
    assert "study_main(NAME)" in path.read_text()


def test_default_study_is_wide_enough_to_be_accurate():
    # issue 14: a real head (64 channels); the tiny test variants stay small
    assert load_study("mnist_gap_cnn").DEFAULTS.widths[2] >= 64


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
