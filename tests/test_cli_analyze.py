"""``glminterp analyze``: one's own model from a factory and a state dict, data from files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _analysis_support import check_full_report, small_digits, write_rgb_folder
from zoo import ZOO

import glminterp as gi
from glminterp.cli import main
from glminterp.report import builder as rp

ZOO_FILE = Path(__file__).resolve().parent / "zoo.py"


def npz_of(data, path: Path) -> Path:
    np.savez(path, x=data.images.numpy(), y=data.labels.numpy(), ids=data.ids)
    return path


def run_quiet(argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(argv)


@pytest.mark.slow
def test_analyze_module_factory_npz(tmp_path, capsys):
    model = ZOO["mlp"].build(seed=3)
    torch.save(model.state_dict(), tmp_path / "mlp.pt")
    data = npz_of(small_digits(), tmp_path / "digits.npz")
    out = tmp_path / "rep"
    code = run_quiet(["analyze", "--model", "zoo:mlp", "--model-args", '{"seed": 0}',
                      "--checkpoint", str(tmp_path / "mlp.pt"), "--npz", str(data),
                      "--out", str(out), "--show-images", "2", "--quiet"])
    assert code == 0
    assert f"Report: {out / rp.HTML_NAME}" in capsys.readouterr().out
    _, fit = check_full_report(out, ran={"occlusion"})
    # the checkpoint's weights were loaded over the factory's (seed 0 != seed 3)
    saved = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    prov = json.loads((out / rp.PROVENANCE_NAME).read_text())
    assert prov["command_line"][:2] == ["glminterp", "analyze"]
    assert fit["study"]["name"] == "mlp"


@pytest.mark.slow
def test_analyze_file_factory_rgb_folder_all_refit(tmp_path):
    model = ZOO["flatten_head_cnn"].factory(seed=0, in_channels=3, n_classes=3)
    torch.save(model.state_dict(), tmp_path / "cnn.pt")
    folder = write_rgb_folder(tmp_path / "imgs")
    out = tmp_path / "rep"
    code = run_quiet(["analyze", "--model", f"{ZOO_FILE}:flatten_head_cnn", "--model-args",
                      '{"in_channels": 3, "n_classes": 3}', "--checkpoint", str(tmp_path / "cnn.pt"),
                      "--images", str(folder), "--normalize", "per_channel", "--all-refit",
                      "--sections", "gradcam,occlusion", "--remedy", "ridge", "--out", str(out),
                      "--quiet"])
    assert code == 0
    html, fit = check_full_report(out, ran={"gradcam", "occlusion"})
    assert fit["study"]["rows"] == {"refit": 72} and fit["estimator"]["remedy"] == "ridge"
    assert "per channel (x - mean) / std" in html and "blue, green, red" in html


@pytest.mark.slow
def test_analyze_saved_activations(tmp_path, mlp_digits_acts):
    mlp_digits_acts.to_parquet(tmp_path / "acts.parquet")
    out = tmp_path / "rep"
    assert run_quiet(["analyze", "--activations", str(tmp_path / "acts.parquet"), "--out",
                      str(out), "--quiet"]) == 0
    html = (out / rp.HTML_NAME).read_text()
    fit = json.loads((out / rp.FIT_NAME).read_text())
    assert fit["estimator"]["tried"][0] == "mle" and "What was fitted" in html
    assert "Not applicable: the report was built from saved activations" in html


def test_errors_name_the_flag(tmp_path, capsys):
    torch.save(ZOO["mlp"].build().state_dict(), tmp_path / "mine.pt")
    npz = npz_of(gi.load_digits().subset(np.arange(40)), tmp_path / "d.npz")
    assert main(["analyze", "--checkpoint", str(tmp_path / "mine.pt"), "--npz", str(npz)]) == 2
    err = capsys.readouterr().err
    assert "--model is needed" in err and "architecture=" not in err
    assert main(["analyze", "--model", "zoo:nope", "--checkpoint", str(tmp_path / "mine.pt"),
                 "--npz", str(npz)]) == 2
    assert "--model: " in capsys.readouterr().err
    assert main(["analyze", "--model", "zoo:flatten_head_cnn", "--checkpoint",
                 str(tmp_path / "mine.pt"), "--npz", str(npz)]) == 2
    assert "--checkpoint mine.pt does not fit the --model network" in capsys.readouterr().err
    assert main(["analyze", "--model", "zoo:mlp", "--checkpoint", str(tmp_path / "mine.pt")]) == 2
    assert "exactly one of --images" in capsys.readouterr().err
    assert main(["analyze", "--model", "zoo:mlp", "--model-args", "{x", "--checkpoint",
                 str(tmp_path / "mine.pt"), "--npz", str(npz)]) == 2
    assert "--model-args is not valid JSON" in capsys.readouterr().err


def test_save_checkpoint_refuses_names_extract_cannot_rebuild(tmp_path):
    with pytest.raises(ValueError, match="glminterp analyze --model"):
        gi.save_checkpoint(ZOO["mlp"].build(), tmp_path / "m.pt", architecture="CustomNet")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()
