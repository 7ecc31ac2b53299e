"""Each study end to end at a tiny size; reruns are byte-identical; failures keep old reports."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from test_report_render import assert_self_contained, parse

import glminterp as gi
from glminterp.report import builder as rp
from glminterp.report import studies as st

pytestmark = pytest.mark.slow

TINY = {
    "mnist_gap_cnn": {"size": 400, "epochs": 3, "lr": 5e-3, "widths": (4, 8, 4), "n_images": 2},
    "mnist_mlp": {"size": 500, "epochs": 2, "hidden": 4, "n_images": 2, "top_units": 2},
    "mnist_zero_one": {"size": 200, "epochs": 1},
}


def run_tiny(name, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return st.run_study(name, out, progress=False, **{**TINY[name], **kw})


@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("studies")
    first = run_tiny("mnist_mlp", out / "a")
    second = run_tiny("mnist_mlp", out / "b")
    return first, second


def section_errors(res) -> dict:
    """Visualization steps that failed and became a "not available" note in the report."""
    return {k: v for k, v in res.extras.items() if k.endswith("_error")}


def check_report(folder):
    html = (folder / rp.HTML_NAME).read_text()
    assert parse(html).ids == list(rp.SECTION_IDS)
    assert_self_contained(html)
    for name in (rp.COEF_NAME, rp.FIT_NAME, rp.PROVENANCE_NAME, "activations.parquet",
                 "model.pt", "training_curve.csv", "splits.csv"):
        assert (folder / name).is_file(), name
    return html


def test_mlp_study_end_to_end(mlp_runs):
    res, _ = mlp_runs
    assert res.refit is not None, res.refit_error
    assert section_errors(res) == {}
    html = check_report(res.folder)
    coef = pd.read_csv(res.folder / rp.COEF_NAME, dtype={"class": str})
    mem = res.refit.coefficients
    np.testing.assert_allclose(coef["coef"], mem["coef"], rtol=1e-7)
    np.testing.assert_allclose(coef["se"], mem["se"], rtol=1e-7)
    fit = json.loads((res.folder / rp.FIT_NAME).read_text())
    assert fit["fit"]["llf"] == pytest.approx(res.refit.fit_stats["llf"], rel=1e-7)
    assert fit["study"]["rows"] == {"refit": 150, "test": 100, "train": 250}
    # events per parameter: rows of the rarest class on the refit split per live unit
    assert fit["study"]["events_per_parameter"] == pytest.approx(15 / len(res.refit.units))
    assert "timings" not in json.dumps(fit)
    assert "receptive_fields.png" in {p.name for p in (res.folder / "figures").iterdir()}
    acts = gi.Activations.read_parquet(res.folder / "activations.parquet")
    assert len(acts) == 500 and acts.head.n_inputs == 4
    top = res.top_units(2)
    assert set(top) == set(res.refit.classes) and all(len(df) == 2 for df in top.values())
    assert res.summary_lines()[0] == f"Report: {res.report}"
    assert "Not applicable" in html.split('id="cam"')[1].split("</section>")[0]


def test_rerun_is_byte_identical(mlp_runs):
    a, b = (r.folder for r in mlp_runs)
    for name in (rp.COEF_NAME, rp.FIT_NAME, "training_curve.csv", "splits.csv", rp.MANIFEST_NAME):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for fig in sorted(p.name for p in (a / "figures").iterdir()):
        assert (a / "figures" / fig).read_bytes() == (b / "figures" / fig).read_bytes(), fig
    prov = json.loads((a / rp.PROVENANCE_NAME).read_text())
    assert prov["seeds"]["split"] == 0 and len(prov["data_sha256"]) == 64
    assert {"train", "refit", "total"} <= set(prov["timings_s"])


def test_gap_cnn_study_end_to_end(tmp_path):
    res = run_tiny("mnist_gap_cnn", tmp_path)
    html = check_report(res.folder)
    cam = html.split('id="cam"')[1].split("</section>")[0]
    assert "data:image/png;base64," in cam  # the gallery (network CAM at least)
    assert "cam_network" in res.extras
    # the tiny run's refit rows are not separated (seeded), so every section must render
    assert res.refit is not None, res.refit_error
    assert section_errors(res) == {}
    glm_cam = res.extras["cam"]
    assert glm_cam.has_uncertainty and glm_cam.se.shape[-2:] == (28, 28)
    assert "SE" in cam and "Not available" not in html
    faith = res.extras["faithfulness"]
    assert list(faith.index) == ["CAM (network)", "CAM (GLM)", "CAM (Holm-significant channels only)"]
    assert faith[["deletion_auc", "insertion_auc", "avg_drop"]].apply(lambda c: c.between(0, 1)).all().all()
    assert "Faithfulness of the maps" in cam
    assert res.activations.head.gap


def test_zero_one_study_end_to_end(tmp_path):
    res = run_tiny("mnist_zero_one", tmp_path)
    check_report(res.folder)
    assert set(res.data.classes) == {"0", "1"}
    assert set(res.data.labels.tolist()) == {0, 1}
    assert res.activations.head.n_inputs == 1
    assert res.refit is not None, res.refit_error
    assert section_errors(res) == {}
    assert "zero_one" in res.extras and np.isfinite(res.extras["zero_one"].deviance)


def test_zero_one_study_firth_when_separated(tmp_path, monkeypatch):
    """Separated refit rows: the study falls back to Firth, with finite estimates, and says so."""
    real = gi.refit_output_layer
    calls = []

    def separated_first(acts, **kw):  # the LP check on these tiny rows may or may not separate
        calls.append(kw.get("remedy"))
        if kw.get("remedy") is None:
            raise gi.SeparationError("separated (test)", classes=("0", "1"), n_units=1)
        return real(acts, **kw)

    monkeypatch.setattr(gi, "refit_output_layer", separated_first)
    res = run_tiny("mnist_zero_one", tmp_path)
    assert calls == [None, "firth"]
    assert res.refit is not None, res.refit_error
    assert res.refit.remedy == "firth" and "remedy_fallback" in res.extras
    html = (res.folder / "report.html").read_text()
    assert "PENALIZED" in html and "Separation check" in html and "refitted with" in html
    fit = json.loads((res.folder / "fit.json").read_text())
    assert fit["remedy"]["name"] == "firth" and "remedy_fallback" in fit
    coef = res.refit.coefficients
    assert np.isfinite(coef[["coef", "se", "ci_lower", "ci_upper", "p"]].to_numpy()).all()
    assert "zero_one" in res.extras and np.isfinite(res.extras["zero_one"].deviance)


def test_config_remedy_reaches_the_refit(tmp_path):
    res = run_tiny("mnist_zero_one", tmp_path, remedy="ridge")
    assert res.refit.remedy == "ridge" and "penalized inference" in res.refit.inference


def test_idx_study_reads_idx_files(tmp_path):
    src = gi.load_mnist5k()
    pick = np.concatenate([np.flatnonzero(src.labels.numpy() == k)[:30] for k in range(10)])
    images = (src.images[pick, 0].numpy() * 255).round().astype(np.uint8)
    gi.write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    gi.write_idx(tmp_path / "train-labels-idx1-ubyte", src.labels.numpy()[pick].astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = st.run_study("mnist_idx", tmp_path / "out", idx_path=tmp_path, progress=False,
                           size=None, epochs=1, widths=(2, 4, 2), n_images=1)
    assert res.folder.name == "mnist_idx" and res.data.name == "mnist-train"
    assert len(res.data) == 300
    check_report(res.folder)


def test_failed_run_leaves_previous_report(tmp_path, monkeypatch):
    first = run_tiny("mnist_zero_one", tmp_path)
    before = {p: p.read_bytes() for p in first.folder.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the report")

    monkeypatch.setattr(rp.ReportBuilder, "manifest", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_tiny("mnist_zero_one", tmp_path)
    after = {p: p.read_bytes() for p in first.folder.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist_zero_one"]


def test_unknown_study_and_missing_idx_path(tmp_path):
    with pytest.raises(ValueError, match="not known"):
        st.run_study("nope", tmp_path)
    with pytest.raises(ValueError, match="idx_path"):
        st.run_study("mnist_idx", tmp_path)
    with pytest.raises(TypeError):
        st.default_config("mnist_mlp").replace(nope=1)
