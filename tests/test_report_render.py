"""The report writer: HTML structure, self-containment, escaping, atomicity, stable files."""

from __future__ import annotations

import json
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from glminterp.plots.report import save_png
from glminterp.report import builder as rp

EVIL = "<script>alert(1)</script>"


class _Collector(HTMLParser):
    """Tags, attributes and ids of an HTML page; raises on unbalanced section tags."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.open_sections = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "section":
            self.open_sections += 1
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))
            if k == "id":
                self.ids.append(v)

    def handle_endtag(self, tag):
        if tag == "section":
            self.open_sections -= 1


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


def assert_self_contained(html: str) -> None:
    """No reference to anything outside the file: only data: URIs and #anchors."""
    page = parse(html)
    for tag, key, value in page.attrs:
        if key in ("src", "href", "srcset", "poster", "data", "action"):
            assert value.startswith(("data:", "#")), (tag, key, value[:60])
    stripped = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    for needle in ("http:", "https:", "//", "@import", "url("):
        assert needle not in stripped, needle
    assert "<link" not in stripped and "<script" not in stripped.lower()


def toy_coefficients(classes=("1", "2"), units=("fc1:000", "fc1:001", "fc1:002")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for c in classes:
        for t in ("const", *units):
            coef, se = rng.normal(), 0.2 + rng.random()
            z = coef / se
            rows.append({"class": c, "term": t, "coef": coef, "se": se, "z": z, "p": 2 * (1 - 0.5),
                         "ci_lower": coef - 2 * se, "ci_upper": coef + 2 * se,
                         "p_holm": np.nan if t == "const" else min(1.0, abs(1 / z)),
                         "p_bh": np.nan if t == "const" else 0.5,
                         "network_weight": coef + 0.1})
    return pd.DataFrame(rows)


def toy_builder(classes=("1", "2")) -> rp.ReportBuilder:
    rb = rp.ReportBuilder("Toy report", "toy")
    rb.text("data", "Some rows.")
    fit = {"family": "multinomial", "alpha": 0.05, "fit": {"llf": -1.5, "lr_pvalue": 1e-9},
           "agreement": {"statistic": 3.0, "df": 8, "p_value": 0.93, "reject": False},
           "diagnostics": {"condition_number": 12.5, "events_per_parameter": 15.0},
           "dropped_units": [{"unit": "fc1:003", "reason": "dead (all zero)"}]}
    coef = toy_coefficients(classes)
    rp.add_refit_sections(rb, coef, fit)
    rb.add_csv(rp.COEF_NAME, coef)
    rb.add_json(rp.FIT_NAME, fit)
    return rb


def test_every_section_present_and_html_parses(tmp_path):
    path = toy_builder().write(tmp_path / "toy", provenance=rp.provenance(seeds={"split": 0}))
    html = path.read_text()
    page = parse(html)
    assert page.open_sections == 0
    assert [i for i in page.ids] == list(rp.SECTION_IDS)
    assert html.startswith("<!DOCTYPE html>")
    # sections without content say so instead of vanishing
    cam = html.split('id="cam"')[1].split("</section>")[0]
    assert "Not available" in cam
    # three figures from the refit sections, embedded as PNG data URIs
    imgs = [v for t, k, v in page.attrs if t == "img" and k == "src"]
    assert len(imgs) == 3 and all(v.startswith("data:image/png;base64,") for v in imgs)
    assert sorted(p.name for p in (tmp_path / "toy" / "figures").iterdir()) == [
        "forest.png", "weights_vs_coef.png", "z_heatmap.png"]


def test_report_is_self_contained(tmp_path):
    html = toy_builder().write(tmp_path / "toy", provenance=rp.provenance()).read_text()
    assert_self_contained(html)


def test_self_containment_check_can_fail():
    with pytest.raises(AssertionError):
        assert_self_contained('<img src="https://example.org/x.png">')
    with pytest.raises(AssertionError):
        assert_self_contained("<style>@import 'x.css';</style>")


def test_class_name_with_script_is_escaped(tmp_path):
    rb = toy_builder(classes=(EVIL, "2"))
    rb.note("classic", EVIL)
    html = rb.write(tmp_path / "evil", provenance={"command_line": [EVIL]}).read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert_self_contained(html)


def test_coefficient_table_sorted_by_abs_z(tmp_path):
    rb = toy_builder()
    block = rb.sections["coefficients"][0]
    z = [float(r[block["columns"].index("z")]) for r in block["rows"]]
    assert z and np.all(np.diff(np.abs(z)) <= 1e-3 * np.abs(z[:-1]) + 1e-12)
    assert "p_holm" in block["columns"] and "p_bh" in block["columns"]


def test_rewrite_is_byte_identical(tmp_path):
    a = toy_builder().write(tmp_path / "a", provenance=rp.provenance()).parent
    b = toy_builder().write(tmp_path / "b", provenance=rp.provenance()).parent
    for name in (rp.COEF_NAME, rp.FIT_NAME, rp.MANIFEST_NAME, "figures/forest.png",
                 "figures/z_heatmap.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_failed_write_leaves_previous_report(tmp_path):
    target = tmp_path / "toy"
    toy_builder().write(target, provenance=rp.provenance())
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def boom(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("disk full")

    rb = toy_builder(classes=("7", "8"))
    rb.add_file("zzz.bin", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        rb.write(target, provenance=rp.provenance())
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no temporary folder left behind


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0]
        out.append(kind)
        pos += 12 + n
    return out


def test_png_has_no_software_or_time_chunk():
    def draw():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig

    a, b = save_png(draw()), save_png(draw())
    assert a == b
    chunks = _png_chunks(a)
    assert b"tIME" not in chunks and b"tEXt" not in chunks and b"iTXt" not in chunks


def test_to_jsonable_rounds_and_drops_nonfinite():
    out = rp.to_jsonable({"a": np.float64(1 / 3), "b": np.nan, "c": np.inf, "d": np.int64(3),
                          "e": (1, 2.5), "f": pd.Series({"x": 0.1 + 0.2})})
    assert out == {"a": 0.33333333, "b": None, "c": None, "d": 3, "e": [1, 2.5],
                   "f": {"x": 0.3}}
    text = rp.dumps({"b": 1, "a": 2.0})
    assert text == '{\n  "a": 2.0,\n  "b": 1\n}\n'
    json.loads(text)


def test_top_units_orders_by_p_then_abs_z():
    coef = pd.DataFrame({
        "class": ["1"] * 5, "term": ["const", "u1", "u2", "u3", "u4"],
        "z": [9.0, 1.0, -5.0, 3.0, 5.0], "p": [0.0, 0.3, 1e-6, 0.003, 1e-6],
    })
    top = rp.top_units(coef, 3)["1"]
    assert top["term"].tolist() == ["u2", "u4", "u3"]  # tie on p broken by |z|, order kept


def test_render_html_from_saved_refit_results(tmp_path):
    folder = tmp_path / "refit"
    folder.mkdir()
    toy_coefficients().to_csv(folder / rp.COEF_NAME, index=False)
    (folder / rp.FIT_NAME).write_text(rp.dumps({"family": "multinomial", "fit": {"llf": -2.0}}))
    path = rp.render_html(folder)
    html = path.read_text()
    assert parse(html).ids == list(rp.SECTION_IDS)
    assert "fc1:002" in html and "llf" in html
    assert (folder / "figures" / "forest.png").is_file()
    assert_self_contained(html)
    with pytest.raises(FileNotFoundError, match="coefficients.csv"):
        rp.render_html(tmp_path)


def test_builder_rejects_unknown_section_and_bad_names():
    rb = rp.ReportBuilder("t", "t")
    with pytest.raises(KeyError, match="not a report section"):
        rb.text("nope", "x")
    with pytest.raises(ValueError, match="relative path"):
        rb.add_file("../x", b"")
    with pytest.raises(ValueError, match="figure name"):
        rb.figure("data", plt.figure(), "a b")
    plt.close("all")
