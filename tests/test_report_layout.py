"""The report layout: first-screen summary, folded long tables with CSV links, alignment."""

from __future__ import annotations

from urllib.parse import unquote

import numpy as np
import pandas as pd
from test_report_render import assert_self_contained, parse, toy_builder, toy_coefficients

from glminterp.report import builder as rp
from glminterp.report import summary as summ


def test_long_table_folds_top_rows_and_links_its_csv(tmp_path):
    rb = rp.ReportBuilder("t", "t")
    df = pd.DataFrame({"unit": [f"u{i}" for i in range(25)], "z": np.arange(25) / 7})
    rb.add_csv("long.csv", df)
    rb.table("coefficients", df, caption="Long", csv="long.csv")
    html = rb.write(tmp_path / "r", provenance={}).read_text()
    body = html.split('id="coefficients"')[1].split("</section>")[0]
    visible, folded = body.split("<details>")
    assert visible.count("<tr>") == 1 + rp.FOLD_ROWS  # header + the top rows
    assert folded.count("<tr>") == 1 + 25 and "Show all 25 rows" in folded
    href = body.split('href="')[1].split('"')[0]
    assert href.startswith("data:text/csv;charset=utf-8,") and 'download="long.csv"' in body
    assert unquote(href.split(",", 1)[1]) == (tmp_path / "r" / "long.csv").read_text()
    assert '<td class="num">0.1429</td>' in body and "<td>u1</td>" in body  # numbers right
    assert_self_contained(html)


def test_overview_is_first_and_holds_the_headline(tmp_path):
    html = toy_builder().write(tmp_path / "toy", provenance={}).read_text()
    assert parse(html).ids[0] == "overview"
    ov = html.split('id="overview"')[1].split("</section>")[0]
    assert "Units that matter per class" in ov and "Agreement of the network" in ov
    assert "What limits the inference" in ov


def test_headline_units_and_simultaneous_cis():
    coef = toy_coefficients(classes=("1", "2"), units=("u1", "u2", "u3"))
    coef["p_holm"] = np.where(coef["term"] == "u2", 0.001, np.where(coef["term"] == "const",
                                                                   np.nan, 0.5))
    table = summ.headline_table(coef, 0.05, n=2)
    assert table["units that matter"].tolist() == ["1 of 3", "1 of 3"]
    # Bonferroni over m = 6 unit coefficients: coef +/- z_{1 - 0.05/12} se
    row = coef[(coef["class"] == "1") & (coef["term"] == "u2")].iloc[0]
    q = 2.6382  # scipy.stats.norm.ppf(1 - 0.05 / 12)
    lo, hi = row["coef"] - q * row["se"], row["coef"] + q * row["se"]
    assert table.iloc[0, 2] == f"u2 {row['coef']:+.3g} [{lo:.3g}, {hi:.3g}]"


def test_limits_and_agreement_in_words():
    fit = {"study": {"events_per_parameter": 2.5}, "dropped_units": [{"unit": "a"}],
           "diagnostics": {"condition_number": 3e5, "train_overlap": 4}}
    text = " ".join(summ.limits(fit))
    assert "2.5 < 10" in text and "1 units were dropped" in text
    assert "4 refit rows were also training rows" in text and "ill-conditioned" in text
    assert summ.limits({"diagnostics": {"condition_number": 10}}) == []
    ag = {"interpretation": "Rejected at alpha=0.05 (chi2=3, df=2, p=0.01): differs. More."}
    assert summ.agreement_sentence(ag) == "Rejected at alpha=0.05 (chi2=3, df=2, p=0.01): differs."


def test_comparison_frame_on_the_z_scale():
    coef = toy_coefficients()
    frame = summ.comparison_frame(coef, 0.05)
    units = coef[coef["term"] != "const"]
    np.testing.assert_allclose(frame["y"], units["coef"] / units["se"])
    np.testing.assert_allclose(frame["x"], units["network_weight"] / units["se"])
    np.testing.assert_allclose(frame["y_hi"] - frame["y"], 2.0)  # toy CIs are coef +/- 2 se


def test_comparison_leaves_out_near_constant_units():
    coef = toy_coefficients(units=("u1", "u2", "u3", "u4"))
    coef.loc[coef["term"] == "u4", "se"] = 1e-9  # a nearly dead unit: |w / se| ~ 1e9
    frame = summ.comparison_frame(coef, 0.05)
    assert "u4" not in set(frame["term"]) and frame.attrs["n_degenerate"] == 2
    assert len(frame) == 6
