"""Screenshot of a report in headless Chromium, checked for non-blank figures.

Runs only where Debian's ``chromium`` package is installed (``/usr/bin/chromium``); it is not
installed on a new machine of this project's kind, and ``.ci/run`` installs it when it can; where it
cannot, the test is skipped and says why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_report_render import toy_builder

from glminterp.report import builder as rp

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless screenshot check needs Debian's chromium (/usr/bin/chromium), not installed",
)


def test_screenshot_shows_non_blank_figures(tmp_path):
    import matplotlib.image as mpimg

    html = toy_builder().write(tmp_path / "toy", provenance=rp.provenance())
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1200,4000", f"--screenshot={shot}", html.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 1000
    # figures are drawn in colour on white: a sizeable non-white area, coloured pixels spread
    # over the page (not one stray widget) and many distinct colours (rendered plots)
    assert (img.min(axis=2) < 0.9).mean() > 0.03
    coloured = (img.max(axis=2) - img.min(axis=2)) > 0.2
    assert coloured.mean() > 0.002
    rows = np.flatnonzero(coloured.any(axis=1))
    assert rows.max() - rows.min() > 1000
    assert len(np.unique((img[coloured] * 255).astype(int), axis=0)) > 50
    shutil.rmtree(tmp_path / "toy")


# ----------------------------------------------------------------------------- layout probes
_PROBE = """<script>
window.addEventListener("load", () => {
  // after "load" every image has been fetched; a broken one is complete with no pixels
  const decoded = [...document.images].map((i) => i.complete && i.naturalWidth > 0);
  const ov = document.getElementById("overview").getBoundingClientRect();
  const r = {top: ov.top, bottom: ov.bottom, vh: window.innerHeight, vw: window.innerWidth,
             scroll_w: document.documentElement.scrollWidth, n_img: decoded.length,
             bad_img: decoded.filter((ok) => !ok).length,
             first: document.querySelector("main section").id,
             wide: [...document.querySelectorAll("main section")].filter(
               (s) => s.scrollWidth > s.clientWidth + 1).map((s) => s.id)};
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def probe(html_path: Path, tmp_path: Path, width: int = 1280, height: int = 900) -> dict:
    """Layout facts measured in headless Chromium on a copy of the page with a probe script
    (the report itself has no script)."""
    import json
    import re
    import tempfile

    copy = tmp_path / f"probe-{width}.html"
    copy.write_text(html_path.read_text().replace("</body>", _PROBE + "</body>"))
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
           f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
           copy.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout)
    assert found, (proc.returncode, len(proc.stdout), proc.stdout[-300:])
    import html as _html

    return json.loads(_html.unescape(found.group(1)))


def screenshot(html_path: Path, shot: Path, tmp_path: Path, width=1280, height=900) -> np.ndarray:
    import tempfile

    import matplotlib.image as mpimg

    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
           f"--window-size={width},{height}", f"--screenshot={shot}", html_path.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    return mpimg.imread(shot)[..., :3]


FIRST_SCREEN = 900  # px: the height of the 1280x900 screenshots of the first screen


def check_layout(html_path: Path, tmp_path: Path) -> dict:
    for width in (1280, 1000):
        r = probe(html_path, tmp_path, width=width)
        assert r["first"] == "overview"
        assert 0 <= r["top"] and r["bottom"] <= FIRST_SCREEN, r  # first screen: the summary
        assert r["scroll_w"] <= r["vw"] and r["wide"] == [], r  # no horizontal overflow
        assert r["n_img"] >= 3 and r["bad_img"] == 0, r  # every image decodes
    return r


def test_toy_report_first_screen_no_overflow_images_decode(tmp_path):
    html = toy_builder().write(tmp_path / "toy", provenance=rp.provenance())
    check_layout(html, tmp_path)


@pytest.mark.slow
def test_analysis_report_layout_in_a_browser(tmp_path):
    """A real analysis report (10-class headline, long tables): the summary fits the first
    screen at 1280x900 and 1000x900, nothing overflows sideways, every figure decodes."""
    import warnings

    from _analysis_support import small_digits
    from zoo import ZOO

    import glminterp as gi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = gi.Analysis(ZOO["flatten_head_cnn"].build(), small_digits(), progress=False,
                        plan=gi.Plan(images=2, top_k=4, patch_channels=2))
        html = a.run().write_report(tmp_path / "rep")
    r = check_layout(html, tmp_path)
    assert r["n_img"] >= 8
    img = screenshot(html, tmp_path / "first.png", tmp_path)
    # the first screen is text and tables on white, with the dark header band on top
    assert img.shape[:2] == (900, 1280) and img[:40].mean() < 0.4 and img[200:].mean() > 0.8
