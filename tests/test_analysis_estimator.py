"""The estimator an analysis chooses: MLE when it exists, otherwise the remedy the data need."""

from __future__ import annotations

import pytest

import glminterp as gi
from glminterp.analysis import applicable_steps, choose_estimator


class FakeFits:
    """A refit that raises for the estimators listed in ``fails`` (separation for the MLE)."""

    def __init__(self, fails: dict):
        self.fails, self.calls = fails, []

    def __call__(self, remedy):
        self.calls.append(remedy)
        if remedy in self.fails:
            raise self.fails[remedy]
        return f"fit:{remedy}"


SEP = gi.SeparationError("class 3 is separated by unit u1", classes=("3",), n_units=1)


def test_mle_exists():
    fits = FakeFits({})
    res, choice = choose_estimator(fits, "auto", 10)
    assert res == "fit:None" and fits.calls == [None]
    assert choice.remedy is None and choice.estimator == "maximum likelihood"
    assert choice.to_dict()["tried"] == ["mle"] and "not separated" in choice.why


def test_separated_two_classes_uses_firth():
    fits = FakeFits({None: SEP})
    res, choice = choose_estimator(fits, "auto", 2)
    assert res == "fit:firth" and fits.calls == [None, "firth"]
    assert choice.remedy == "firth" and choice.tried == ("mle", "firth")
    assert "class 3 perfectly predicted by a direction using 1 unit" in choice.why
    assert "refitted with" in choice.why and "class 3 is separated by unit u1" in choice.detail


def test_separated_softmax_without_multinomial_firth_falls_back_to_ridge():
    # until the multinomial bias-reduced fit is wired in, remedy="firth" refuses K > 2
    fits = FakeFits({None: SEP, "firth": ValueError("firth is implemented for binomial models")})
    res, choice = choose_estimator(fits, "auto", 10)
    assert res == "fit:ridge" and fits.calls == [None, "firth", "ridge"]
    assert choice.remedy == "ridge" and "not available for this 10-class head" in choice.why
    assert "implemented for binomial models" in choice.detail


def test_forced_estimators_and_mle_only():
    fits = FakeFits({None: SEP})
    with pytest.raises(gi.SeparationError):
        choose_estimator(fits, None, 10)  # MLE only: separation is an error, not a fallback
    res, choice = choose_estimator(FakeFits({}), "pca", 10)
    assert res == "fit:pca" and choice.why == "remedy='pca', as the plan asked"


def test_real_separated_binary_refit_is_firth(tmp_path):
    """A one-unit head that separates the classes: the MLE does not exist, Firth is used."""
    import numpy as np
    import torch

    model = gi.zero_one_net(n_inputs=4)
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[4.0, 0, 0, 0]]))
        model.fc1.bias.zero_()
        model.out.weight.copy_(torch.tensor([[-1.0], [1.0]]))
    x = np.zeros((40, 1, 2, 2), np.float32)
    y = np.arange(40) % 2
    x[:, 0, 0, 0] = np.where(y == 1, 1.0, -1.0) * np.linspace(0.5, 1.5, 40)
    a = gi.Analysis(model, (x, y), splits="refit", progress=False, plan=gi.Plan(sections=()))
    a.refit_head()
    assert a.estimator.remedy == "firth" and a.refit.remedy == "firth"
    assert np.isfinite(a.refit.coefficients["coef"]).all()


def test_applicable_steps_by_architecture(gap_cnn_digits, mlp_digits, digits):
    gap = gi.detect_head(gap_cnn_digits, digits.images[:2])
    steps = applicable_steps(gap_cnn_digits, gap)
    assert {s for s, why in steps.items() if why is None} == {
        "cam", "occlusion", "siddhartha", "patches", "deconvnet"}
    assert steps["gradcam"].startswith("not needed")
    mlp = gi.detect_head(mlp_digits, digits.images[:2])
    steps = applicable_steps(mlp_digits, mlp)
    assert {s for s, why in steps.items() if why is None} == {
        "occlusion", "receptive_fields", "olden_garson"}
    assert "GAP head" in steps["cam"]


def test_notebook_html(digits):
    _, choice = choose_estimator(FakeFits({None: SEP}), "auto", 2)
    html = choice._repr_html_()
    assert "<table>" in html and "firth" in html
    assert "remedy=&#x27;firth&#x27;" in html  # escaped
    view = digits._repr_html_()
    assert "<table" in view and "refit" in view and "digits" in view
