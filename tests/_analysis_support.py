"""Shared helpers of the analysis-API and ``glminterp analyze`` tests: small data, report checks."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import numpy as np
from test_report_render import assert_self_contained, parse

import glminterp as gi
from glminterp.report import builder as rp

SMALL = 600  # digits rows per end-to-end test: seconds, and every class on every split


def small_digits(seed: int = 0) -> gi.LabeledImages:
    from glminterp.analysis import subsample

    return subsample(gi.load_digits(), SMALL, seed)


def write_rgb_folder(root: Path, n_per_class: int = 24, seed: int = 0) -> Path:
    """Three classes of 8x8 RGB images (red / green / blue blobs plus noise), PNG and JPEG, some
    10x10 so that the reader must resize them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            side = 10 if i % 6 == 0 else 8
            img = rng.integers(0, 60, size=(side, side, 3))
            r0, c0 = rng.integers(0, side - 4, size=2)
            img[r0 : r0 + 4, c0 : c0 + 4, k] = 230
            fmt = "JPEG" if i % 4 == 0 else "PNG"
            ext = "jpg" if fmt == "JPEG" else "png"
            Image.fromarray(img.astype(np.uint8), "RGB").save(root / name / f"{i:03d}.{ext}", fmt)
    return root


def section(html: str, sid: str) -> str:
    return html.split(f'id="{sid}"')[1].split("</section>")[0]


def check_full_report(folder: Path, *, ran: set[str]) -> tuple[str, dict]:
    """Every section present and self-contained, nothing 'Not available', the steps ``ran`` ran
    and every other step is named as not applying (with the reason)."""
    html = (folder / rp.HTML_NAME).read_text()
    assert parse(html).ids == list(rp.SECTION_IDS)
    assert_self_contained(html)
    assert "Not available" not in html, re.findall(r".{80}Not available.{120}", html)[:2]
    fit = json.loads((folder / rp.FIT_NAME).read_text())
    steps = fit["study"]["steps"]
    assert {s for s, v in steps.items() if v == "ok"} == ran, steps
    for step, status in steps.items():
        if step not in ran and status != "not in the plan":
            assert status.startswith(("not applicable: ", "not needed: ")), (step, status)
            assert status.split(": ", 1)[1] in unescape(html)  # the reason is in the report
    for name in (rp.COEF_NAME, rp.FIT_NAME, rp.PROVENANCE_NAME, "layers.csv", "splits.csv",
                 "model.pt"):
        assert (folder / name).is_file(), name
    assert fit["estimator"]["estimator"] and fit["estimator"]["why"]
    overview = section(html, "overview")
    assert "What was fitted" in overview and "Units that matter per class" in overview
    assert fit["estimator"]["estimator"] in unescape(overview)
    return html, fit
