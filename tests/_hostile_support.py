"""Tiny models, data and files for the hostile-input tests (fast: digits, a 4-unit MLP)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import glminterp as gi
from glminterp.cli import main

ROOT = Path(__file__).resolve().parents[1]


class TinyNet(nn.Module):
    """4 inputs -> 3 ReLU units -> ``k`` outputs."""

    def __init__(self, k: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, k)
        with torch.no_grad():
            self.fc1.weight.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.fc1(x)))


class TupleNet(TinyNet):
    def forward(self, x):  # noqa: D102
        return super().forward(x), x


class DictNet(TinyNet):
    def forward(self, x):  # noqa: D102
        return {"logits": super().forward(x)}


def tiny_x(n: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g)


def tiny_acts(n: int = 12, maps: bool = False) -> gi.Activations:
    """Activations of TinyNet on ``n`` rows (optionally with fake (N, 2, 2, 2) maps)."""
    x = tiny_x(n)
    y = torch.arange(n) % 2
    ids = [f"s{i:02d}" for i in range(n)]
    acts = gi.extract_activations(TinyNet(), (x, y, ids), progress=False)
    if maps:
        rng = np.random.default_rng(0)
        acts = gi.Activations(acts.features, acts.obs, acts.head, acts.layers, acts.metadata,
                              {"act": rng.normal(size=(n, 2, 2, 2)).astype(np.float32)})
    return acts


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the command line in-process: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # usage errors exit from argparse, as for any command line
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_subprocess(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "glminterp", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_line_error(code: int, err: str, *needles: str, status: int = 1) -> None:
    """Exit status, exactly one ``error:`` line, no traceback, and the message names things."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == status, err
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (hidden files included)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def cli_files(tmp_path_factory):
    """A checkpoint, its activations and a good refit report, built once per session."""
    root = tmp_path_factory.mktemp("hostile_cli")
    data = gi.load_digits()
    data = data.with_splits(gi.stratified_split(data.labels, data.ids, seed=0))
    model = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=4, n_classes=10)
    gi.train_model(model, data.get_split("train"), epochs=2, lr=1e-2, seed=0, progress=False)
    ckpt = gi.save_checkpoint(model, root / "mlp.pt", architecture="mlp", n_inputs=64, n_hidden=4,
                              n_classes=10, input_shape=data.images.shape[1:])
    acts = gi.extract_activations(model, data, progress=False, seed=0)
    acts_path = acts.to_parquet(root / "acts.parquet")
    report = root / "good_report"
    assert main(["refit", str(acts_path), "--out", str(report), "--quiet"]) == 0
    return {"root": root, "ckpt": ckpt, "acts": acts_path, "report": report}
