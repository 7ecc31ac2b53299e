"""The command line: help, run, extract, refit, report."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from test_report_render import assert_self_contained, parse

import glminterp as gi
from glminterp.cli import main
from glminterp.report import builder as rp


def test_help_explains_each_step(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for step in ("run", "extract", "refit", "report"):
        assert f"  {step} " in out
    assert main([]) == 2


def test_subcommand_help(capsys):
    for cmd in ("run", "extract", "refit", "report"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
    out = capsys.readouterr().out
    assert "--idx-path" in out and "--checkpoint" in out and "--parametrization" in out


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "coefficients.csv" in capsys.readouterr().err
    assert main(["run", "mnist_idx", "--out", str(tmp_path)]) == 1
    assert "idx_path" in capsys.readouterr().err


@pytest.mark.slow
def test_run_prints_summary(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["run", "mnist_zero_one", "--out", str(tmp_path), "--size", "200",
                     "--epochs", "1", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    report = tmp_path / "mnist_zero_one" / rp.HTML_NAME
    assert f"Report: {report}" in out
    assert report.is_file()
    prov = json.loads((report.parent / rp.PROVENANCE_NAME).read_text())
    assert prov["command_line"][:2] == ["glminterp", "run"]


@pytest.mark.slow
def test_extract_refit_report_pipeline(tmp_path, capsys):
    data = gi.load_digits()
    data = data.with_splits(gi.stratified_split(data.labels, data.ids, seed=0))
    model = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=4, n_classes=10)
    # two epochs: the features do not yet separate any class, so the MLE exists
    gi.train_model(model, data.get_split("train"), epochs=2, lr=1e-2, seed=0, progress=False)
    ckpt = gi.save_checkpoint(model, tmp_path / "mlp.pt", architecture="mlp", n_inputs=64,
                              n_hidden=4, n_classes=10)

    acts_path = tmp_path / "acts.parquet"
    assert main(["extract", "--checkpoint", str(ckpt), "--dataset", "digits", "--out",
                 str(acts_path), "--quiet"]) == 0
    acts = gi.Activations.read_parquet(acts_path)
    assert acts.features.shape == (1797, 4)
    assert (acts.obs["split"].to_numpy() == data.split).all()  # the same seeded split
    direct = gi.extract_activations(model, data, progress=False)
    pd.testing.assert_frame_equal(acts.features, direct.features)

    assert main(["extract", "--checkpoint", str(ckpt), "--architecture", "mlp", "--dataset",
                 "digits", "--out", str(tmp_path / "acts_csv"), "--layers", "fc1", "--quiet"]) == 0
    assert pd.read_csv(tmp_path / "acts_csv" / "features.csv").shape == (1797, 5)

    out = tmp_path / "refit"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["refit", str(acts_path), "--out", str(out), "--parametrization",
                     "sum_to_zero", "--quiet"]) == 0
        expected = gi.refit_output_layer(acts, parametrization="sum_to_zero", progress=False)
    printed = capsys.readouterr().out
    assert "Most significant units per class" in printed and "class 9:" in printed
    coef = pd.read_csv(out / rp.COEF_NAME, dtype={"class": str})
    pd.testing.assert_series_equal(coef["coef"], expected.coefficients["coef"], rtol=1e-7)
    html = (out / rp.HTML_NAME).read_text()
    assert parse(html).ids == list(rp.SECTION_IDS)
    assert_self_contained(html)

    (out / rp.HTML_NAME).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / rp.HTML_NAME).read_text() == html

    # --engine fast gives statsmodels' numbers; --remedy ridge is labelled in CSV and HTML
    out2, out3 = tmp_path / "refit_fast", tmp_path / "refit_ridge"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["refit", str(acts_path), "--out", str(out2), "--engine", "fast",
                     "--parametrization", "sum_to_zero", "--quiet"]) == 0
        assert main(["refit", str(acts_path), "--out", str(out3), "--remedy", "ridge",
                     "--quiet"]) == 0
        ridge = gi.refit_output_layer(acts, remedy="ridge", progress=False)
    fast = pd.read_csv(out2 / rp.COEF_NAME, dtype={"class": str})
    np.testing.assert_allclose(fast["se"], expected.coefficients["se"], rtol=1e-6)
    assert json.loads((out2 / rp.FIT_NAME).read_text())["fit"]["engine"] == "fast"
    rcoef = pd.read_csv(out3 / rp.COEF_NAME, dtype={"class": str})
    np.testing.assert_allclose(rcoef["coef"], ridge.coefficients["coef"], rtol=1e-7)
    assert rcoef["inference"].str.contains("penalized inference").all()
    assert "PENALIZED" in (out3 / rp.HTML_NAME).read_text()
