"""Results of method='contrasts' / 'class_subset' / 'ovr' go into fit.json and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_glm_synth import make_acts, simulate_multinomial

from glminterp.refit import refit_output_layer
from glminterp.report import builder as rp


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(4)
    coef = np.column_stack([np.zeros(5), rng.normal(0, 0.5, (5, 3))])
    x, y = simulate_multinomial(rng, 1500, coef)
    return make_acts(x, y, weight=coef[1:].T, bias=coef[0])


WORDS = {"contrasts": ("1 - 3", "were not computed"),
         "class_subset": ("conditional multinomial logit",),
         "ovr": ("one-vs-rest",)}


@pytest.mark.parametrize("kw", [
    {"method": "contrasts", "contrasts": [("2", "h:001"), ("1", "3", "h:000")]},
    {"method": "class_subset", "classes": ["1", "2", "3"]},
    {"method": "ovr"},
])
def test_record_and_report_sections(acts, kw, tmp_path):
    res = refit_output_layer(acts, progress=False, **kw)
    rec = rp.refit_fit_record(res)
    assert rec["fit"]["estimator"] == kw["method"]
    text = json.dumps(rec, sort_keys=True)
    assert json.dumps(rp.refit_fit_record(res), sort_keys=True) == text  # stable
    rb = rp.ReportBuilder("partial", "partial")
    rp.add_refit_sections(rb, res.coefficients, rec)
    rb.add_csv(rp.COEF_NAME, res.coefficients)
    rb.add_json(rp.FIT_NAME, rec)
    html = rb.write(tmp_path / "r", provenance=rp.provenance(seeds={})).read_text()
    for word in WORDS[kw["method"]]:
        assert word in html
