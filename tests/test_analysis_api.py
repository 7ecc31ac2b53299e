"""gi.Analysis on networks the package did not write (tests/zoo.py): full reports, steps alone."""

from __future__ import annotations

import json
import warnings
from html import unescape

import numpy as np
import pandas as pd
import pytest
from _analysis_support import check_full_report, section, small_digits, write_rgb_folder
from zoo import ZOO, assert_unchanged, state_snapshot

import glminterp as gi
from glminterp.report import builder as rp

PLAN = gi.Plan(images=2, top_k=4, patch_channels=2)


def analyse(name, data, tmp_path, **kw):
    model = ZOO[name].build() if isinstance(name, str) else name
    snap = state_snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = gi.Analysis(model, data, plan=kw.pop("plan", PLAN), progress=False, **kw)
        path = a.run().write_report(tmp_path / "report")
    assert_unchanged(model, snap)  # nothing retrained, hooks and flags as found
    assert path == tmp_path / "report" / rp.HTML_NAME and a.report == path
    return a


@pytest.mark.slow
def test_flatten_head_cnn_full_report(tmp_path):
    a = analyse("flatten_head_cnn", small_digits(), tmp_path)
    html, fit = check_full_report(a.folder, ran={"gradcam", "occlusion", "patches", "deconvnet"})
    head = a.activations.head
    assert head.n_inputs == a.model.fc.in_features and not head.gap
    # Grad-CAM (not CAM: no GAP head), Zeiler & Fergus patch grids beside their projections
    assert "Grad-CAM" in section(html, "cam") and "data:image/png" in section(html, "cam")
    patches = a.extras["top_patches"]
    assert patches.patches.shape[:2] == (2, 4) and patches.projections.shape == patches.patches.shape
    assert "top_patches.png" in {p.name for p in (a.folder / "figures").iterdir()}
    assert fit["study"]["rows"] == {"refit": 179, "test": 120, "train": 300}  # seeded
    layers = pd.read_csv(a.folder / "layers.csv")
    assert layers["layer"].tolist() == ["conv", "relu", "pool", "flatten", "fc", "total"]
    assert layers["parameters"].iloc[-1] == sum(p.numel() for p in a.model.parameters())
    width = a.model.conv.out_channels
    assert layers.loc[layers["layer"] == "pool", "output shape"].item() == f"{width} x 4 x 4"


@pytest.mark.slow
def test_mlp_full_report(tmp_path):
    a = analyse("mlp", small_digits(), tmp_path)
    html, _ = check_full_report(a.folder, ran={"occlusion"})
    reason = a.sections_run["receptive_fields"]
    assert "3 Linear layers" in reason and reason.split(": ", 1)[1] in unescape(section(html, "classic"))
    assert "Not applicable" in section(html, "cam")


@pytest.mark.slow
def test_resnet_full_report_with_cam_se(tmp_path):
    a = analyse("resnet_basic", small_digits(), tmp_path)
    check_full_report(a.folder, ran={"cam", "occlusion", "siddhartha", "patches", "deconvnet"})
    assert a.activations.head.gap and a.extras["cam"].has_uncertainty


@pytest.mark.slow
def test_rgb_image_folder_full_report(tmp_path):
    folder = write_rgb_folder(tmp_path / "imgs")
    data = gi.load_image_folder(folder, normalize="per_channel")
    assert data.classes == ("blue", "green", "red") and data.images.shape == (72, 3, 8, 8)
    assert data.preprocessing["resized"] == "12 of 72 images"
    # per-channel normalisation: each channel has mean 0 and sd 1 over all images
    x = data.images.numpy()
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    model = ZOO["flatten_head_cnn"].factory(seed=0, in_channels=3, n_classes=3)
    a = analyse(model, folder, tmp_path, splits="refit",
                plan=PLAN.replace(remedy="ridge", sections=("gradcam", "occlusion")))
    assert a.data.preprocessing["normalization"].startswith("none")  # path read without it
    html, fit = check_full_report(a.folder, ran={"gradcam", "occlusion"})
    assert fit["study"]["rows"] == {"refit": 72}
    assert "every row is a refit row" in section(html, "overview")
    assert a.sections_run["patches"] == "not in the plan"
    assert "red" in section(html, "data") and "3 x 8 x 8" in section(html, "data")


@pytest.mark.slow
def test_steps_alone_and_repr(tmp_path, digits):
    model = ZOO["flatten_head_cnn"].build()
    a = gi.Analysis(model, digits.subset(np.arange(400)), splits="refit", progress=False,
                    plan=gi.Plan(sections=("occlusion",), images=1, remedy="ridge"))
    assert "nothing run yet" in repr(a)
    acts = a.extract()
    assert a.refit is None and len(acts) == 400
    refit = a.refit_head()
    assert refit.remedy == "ridge" and a.estimator.why.startswith("remedy='ridge'")
    extras = a.visualize()
    assert set(extras) == {"occlusion"}
    assert a.sections_run["occlusion"] == "ok" and a.sections_run["cam"].startswith("not applic")
    html = a._repr_html_()
    assert "<table" in html and "occlusion" in html and "ridge" in html
    a.write_report(tmp_path / "r")
    fit = json.loads((tmp_path / "r" / rp.FIT_NAME).read_text())
    assert fit["estimator"]["tried"] == ["ridge"] and fit["remedy"]["name"] == "ridge"


def test_plan_rejects_unknown_sections_and_remedies():
    with pytest.raises(ValueError, match="sections"):
        gi.Plan(sections=("cam", "tsne"))
    with pytest.raises(ValueError, match="remedy"):
        gi.Plan(remedy="lasso")
    with pytest.raises(TypeError, match="nn.Module"):
        gi.Analysis(object(), (np.zeros((4, 1, 2, 2)), [0, 1, 0, 1]))
