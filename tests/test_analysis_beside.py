"""The report's estimator choice: the bias-reduced fit beside the MLE when the MLE exists, and
"the MLE does not exist" when the refit rows are separated."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from test_analysis_estimator import SEP, FakeFits

import glminterp as gi
from glminterp.analysis import bias_reduced_beside, choose_estimator
from glminterp.refit.errors import FitError
from glminterp.report import builder as rp
from glminterp.report.analysis import BESIDE_NAME, comparison_summary, estimator_comparison


def test_beside_is_fitted_only_when_the_mle_is_shown():
    fits = FakeFits({})
    res, choice = choose_estimator(fits, "auto", 10)
    br, choice = bias_reduced_beside(fits, choice)
    assert (res, br) == ("fit:None", "fit:firth") and fits.calls == [None, "firth"]
    assert choice.remedy is None and choice.tried == ("mle", "firth (beside)")
    assert "not separated" in choice.why and "shown beside it" in choice.why
    sep = FakeFits({None: SEP})
    _, choice = choose_estimator(sep, "auto", 10)
    br, same = bias_reduced_beside(sep, choice)
    assert br is None and same is choice and sep.calls == [None, "firth"]  # no third fit
    assert "does not exist" in choice.why


def test_a_failed_bias_reduced_fit_is_said():
    fits = FakeFits({"firth": FitError("no optimum after 5 steps. Try more")})
    _, choice = choose_estimator(fits, "auto", 10)
    br, choice = bias_reduced_beside(fits, choice)
    assert br is None and "not available (no optimum after 5 steps)" in choice.why
    assert choice.remedy is None and choice.tried == ("mle",)


def test_comparison_by_hand():
    mle = pd.DataFrame({"class": ["1", "1", "2"], "term": ["const", "u", "u"],
                        "coef": [1.0, 4.0, -2.0], "se": [1.0, 2.0, 0.5],
                        "p_holm": [np.nan, 0.01, 0.2]})
    br = mle.assign(coef=[0.5, 3.0, -1.5], p_holm=[np.nan, 0.02, 0.01])
    side = estimator_comparison(mle, br)
    np.testing.assert_allclose(side["shift_se"], [-0.5, -0.5, 1.0])
    np.testing.assert_allclose(side["ratio"], [0.5, 0.75, 0.75])
    s = comparison_summary(side, 0.05, {"p_value": 0.3}, None)
    assert s["coefficients compared"] == 2  # intercepts excluded
    assert s["median |bias-reduced / MLE|"] == pytest.approx(0.75)
    assert s["largest |shift| (MLE standard errors)"] == pytest.approx(1.0)
    assert s["Holm-significant at 0.05 (MLE)"] == 1
    assert s["Holm-significant at 0.05 (bias-reduced)"] == 2
    assert s["agreement test p-value (MLE)"] == 0.3 and len(s) == 8


@pytest.fixture(scope="module")
def overlapping(digits, tmp_path_factory):
    """A weak 4-unit MLP on the digits: its refit rows overlap, so the MLE exists."""
    model = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=4, n_classes=10)
    gi.train_model(model, digits.get_split("train"), epochs=2, lr=2e-3, seed=0, progress=False)
    a = gi.Analysis(model, digits, progress=False, plan=gi.Plan(sections=()), name="beside")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_report(tmp_path_factory.mktemp("beside") / "beside")
    return a


def test_report_shows_the_bias_reduced_fit_beside_the_mle(overlapping):
    a = overlapping
    assert a.estimator.remedy is None and a.refit.remedy is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = gi.refit_output_layer(a.activations, split="refit", remedy="firth",
                                       progress=False)
    side = pd.read_csv(a.folder / BESIDE_NAME, dtype={"class": str})
    mine = side.set_index(["class", "term"])
    want = direct.coefficients.set_index(["class", "term"])
    np.testing.assert_allclose(mine["coef_br"], want.loc[mine.index, "coef"], rtol=1e-6)
    got = a.refit.coefficients.set_index(["class", "term"])
    np.testing.assert_allclose(mine["coef_mle"], got.loc[mine.index, "coef"], rtol=1e-6)
    fit = json.loads((a.folder / rp.FIT_NAME).read_text())
    summ = fit["bias_reduced_beside"]["summary"]
    # few events per parameter: the MLE is farther from zero than the bias-reduced fit
    assert summ["median |bias-reduced / MLE|"] < 1
    assert summ["share of coefficients the MLE puts farther from zero"] > 0.5
    assert fit["estimator"]["tried"] == ["mle", "firth (beside)"]
    html = (a.folder / rp.HTML_NAME).read_text()
    fit_html = html.split('id="fit"')[1].split("</section>")[0]
    assert "Maximum likelihood beside the bias-reduced fit" in fit_html
    assert "exists: the refit rows are not separated" in fit_html
    overview = html.split('id="overview"')[1].split("</section>")[0]
    assert "bias-reduced fit beside it" in overview and "shown beside it" in overview


def test_separated_report_says_the_mle_does_not_exist(tmp_path):
    model = gi.zero_one_net(n_inputs=4)
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[4.0, 0, 0, 0]]))
        model.fc1.bias.zero_()
        model.out.weight.copy_(torch.tensor([[-1.0], [1.0]]))
    x = np.zeros((40, 1, 2, 2), np.float32)
    y = np.arange(40) % 2
    x[:, 0, 0, 0] = np.where(y == 1, 1.0, -1.0) * np.linspace(0.5, 1.5, 40)
    a = gi.Analysis(model, (x, y), splits="refit", progress=False, plan=gi.Plan(sections=()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_report(tmp_path / "sep")
    assert a.estimator.remedy == "firth" and a.bias_reduced is None
    assert not (tmp_path / "sep" / BESIDE_NAME).exists()
    fit_html = (tmp_path / "sep" / rp.HTML_NAME).read_text().split('id="fit"')[1]
    fit_html = fit_html.split("</section>")[0]
    assert "does not exist: the refit rows are separated" in fit_html
    assert "not shown (it does not exist)" in fit_html
    assert "bias_reduced_beside" not in json.loads((tmp_path / "sep" / rp.FIT_NAME).read_text())
