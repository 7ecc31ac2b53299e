"""Hostile files and output paths: no data loss, no stale maps, no unclear errors.

Outcome groups: ``test_refused_*`` raise with the path named and leave everything untouched;
``test_correct_*`` / ``test_cleans_*`` / ``test_concurrent_*`` show what was wrong before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _hostile_support import ROOT, snapshot, tiny_acts

import glminterp as gi
from glminterp.outputs import MARKER_NAME, OutputPathError, write_folder
from glminterp.report import builder as rp
from glminterp.scale import write_parquet_shards


def _matches(text: str, message: str) -> bool:
    """``text`` appears literally in ``message``, or as a regular expression."""
    return text in message or re.search(text, message) is not None


# ---------------------------------------------------------------------------- Parquet reads
def _rewrite(path: Path, edit_df=None, edit_meta=None) -> None:
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"glminterp"])
    df = table.to_pandas()
    if edit_df is not None:
        df = edit_df(df)
    if edit_meta is not None:
        meta = edit_meta(meta)
    out = pa.Table.from_pandas(df, preserve_index=False)
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    pq.write_table(out.replace_schema_metadata({b"glminterp": raw}), path)


def _dup(df):
    df.loc[3, "sample_id"] = df.loc[0, "sample_id"]
    return df


def _none_id(df):
    df["sample_id"] = df["sample_id"].astype(object)
    df.loc[2, "sample_id"] = None
    return df


def _nan_id(df):
    df["sample_id"] = np.arange(len(df), dtype=float)
    df.loc[5, "sample_id"] = np.nan
    return df


PARQUET_CASES = {
    "missing": (lambda p: p.unlink(), FileNotFoundError, "does not exist"),
    "directory": (lambda p: (p.unlink(), p.mkdir()), IsADirectoryError, "is a folder"),
    "junk": (lambda p: p.write_bytes(b"PAR1 this is not parquet"), ValueError, "not a readable Parquet"),
    "empty": (lambda p: p.write_bytes(b""), ValueError, "not a readable Parquet"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-40]), ValueError, "not a readable Parquet"),
    "csv_renamed": (lambda p: p.write_text("a,b\n1,2\n"), ValueError, "not a readable Parquet"),
    "no_metadata": (lambda p: pq.write_table(pa.table({"a": [1]}), p), ValueError, "no glminterp metadata"),
    "metadata_not_json": (lambda p: _rewrite(p, edit_meta=lambda m: b"{oops"), ValueError, "not valid JSON"),
    "metadata_lacks_keys": (lambda p: _rewrite(p, edit_meta=lambda m: {"pool": "avg"}), ValueError,
                            "lacks ['feature_columns'"),
    "missing_column": (lambda p: _rewrite(p, edit_df=lambda d: d.drop(columns=["act:001"])), ValueError,
                       "lacks the columns ['act:001']"),
    "duplicate_ids": (lambda p: _rewrite(p, edit_df=_dup), ValueError, "1 duplicated ids"),
    "none_id": (lambda p: _rewrite(p, edit_df=_none_id), ValueError, r"1 missing \(None/NaN\) ids, at rows \[2\]"),
    "nan_id": (lambda p: _rewrite(p, edit_df=_nan_id), ValueError, r"1 missing \(None/NaN\) ids, at rows \[5\]"),
    "no_sample_id": (lambda p: _rewrite(p, edit_df=lambda d: d.rename(columns={"sample_id": "id"})),
                     ValueError, "lacks the columns ['sample_id']"),
}


@pytest.mark.parametrize("case", list(PARQUET_CASES))
def test_refused_parquet(tmp_path, case):
    edit, exc, text = PARQUET_CASES[case]
    path = tiny_acts().to_parquet(tmp_path / "acts.parquet")
    edit(path)
    with pytest.raises(exc) as e:
        gi.Activations.read_parquet(path)
    assert _matches(text, str(e.value)) and "acts.parquet" in str(e.value)


def test_correct_maps_round_trip_and_are_removed_with_the_file(tmp_path):
    path = tmp_path / "acts.parquet"
    with_maps = tiny_acts(maps=True)
    with_maps.to_parquet(path)
    back = gi.Activations.read_parquet(path)
    np.testing.assert_array_equal(back.maps["act"], with_maps.maps["act"])
    tiny_acts().to_parquet(path)  # rewritten without maps: the sidecar goes with it
    assert not (tmp_path / "acts.maps.npz").exists()
    assert gi.Activations.read_parquet(path).maps == {}


def test_correct_stale_sidecar_beside_a_file_without_maps_is_ignored(tmp_path):
    path = tmp_path / "acts.parquet"
    tiny_acts(maps=True).to_parquet(path)
    stale = (tmp_path / "acts.maps.npz").read_bytes()
    tiny_acts().to_parquet(path)
    (tmp_path / "acts.maps.npz").write_bytes(stale)  # e.g. copied back by hand
    assert gi.Activations.read_parquet(path).maps == {}


def test_refused_sidecar_of_another_write_with_equal_row_counts(tmp_path):
    path = tmp_path / "acts.parquet"
    tiny_acts(maps=True).to_parquet(path)
    stale = (tmp_path / "acts.maps.npz").read_bytes()
    other = tiny_acts(maps=True)
    other = gi.Activations(other.features, other.obs, other.head, other.layers, other.metadata,
                           {"act": other.maps["act"] + 18.0})
    other.to_parquet(path)
    (tmp_path / "acts.maps.npz").write_bytes(stale)
    with pytest.raises(ValueError, match="acts.maps.npz does not belong to acts.parquet"):
        gi.Activations.read_parquet(path)


@pytest.mark.parametrize("kind", ["rows", "content", "junk"])
def test_refused_legacy_sidecar_that_does_not_match(tmp_path, kind):
    acts = tiny_acts()  # a conv-free file; give it a legacy (hash-less) sidecar
    path = acts.to_parquet(tmp_path / "acts.parquet")
    _rewrite(path, edit_meta=lambda m: {k: v for k, v in m.items() if k != "maps_sidecar"})
    n = len(acts) - (1 if kind == "rows" else 0)
    maps = np.random.default_rng(0).normal(size=(n, 3, 2, 2)).astype(np.float32)
    side = tmp_path / "acts.maps.npz"
    if kind == "junk":
        side.write_bytes(b"junk")
    else:
        np.savez(side, act=maps)
    with pytest.raises(ValueError, match="acts.maps.npz (does not belong|is not a readable)"):
        gi.Activations.read_parquet(path)


def test_correct_legacy_sidecar_that_matches_is_read(tmp_path):
    acts = tiny_acts()
    path = acts.to_parquet(tmp_path / "acts.parquet")
    _rewrite(path, edit_meta=lambda m: {k: v for k, v in m.items() if k != "maps_sidecar"})
    cells = np.repeat(acts.features.to_numpy()[:, :, None, None], 4, axis=2).reshape(len(acts), 3, 2, 2)
    np.savez(tmp_path / "acts.maps.npz", act=cells.astype(np.float32))
    assert gi.Activations.read_parquet(path).maps["act"].shape == (len(acts), 3, 2, 2)


# ---------------------------------------------------------------------------- output folders
def _user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "chapters" / "one.tex").write_text("years of work")
    (folder / "notes.txt").write_text("keep me")
    return folder


def _fill(tmp: Path) -> None:
    (tmp / "a.txt").write_text("new")


def _target(tmp_path: Path, kind: str) -> tuple[Path, list[Path]]:
    if kind == "user_folder":
        return _user_folder(tmp_path), []
    if kind == "existing_file":
        (tmp_path / "data.csv").write_text("1,2\n")
        return tmp_path / "data.csv", []
    if kind == "the_input":
        (tmp_path / "acts.parquet").write_text("input")
        return tmp_path / "acts.parquet", [tmp_path / "acts.parquet"]
    if kind == "folder_holding_the_input":
        folder = tmp_path / "R"
        folder.mkdir()
        (folder / MARKER_NAME).write_text("{}")
        (folder / "activations.parquet").write_text("input")
        return folder, [folder / "activations.parquet"]
    if kind == "under_a_file":
        (tmp_path / "plain").write_text("x")
        return tmp_path / "plain" / "R", []
    if kind == "symlink":
        _user_folder(tmp_path)
        (tmp_path / "link").symlink_to(tmp_path / "thesis")
        return tmp_path / "link", []
    raise AssertionError(kind)


REFUSED_TARGETS = {
    "user_folder": "was not written by glminterp",
    "existing_file": "is an existing file",
    "the_input": "would replace the input",
    "folder_holding_the_input": "would replace the input",
    "under_a_file": "is a file, not a folder",
    "symlink": "is a symbolic link",
}


@pytest.mark.parametrize("kind", list(REFUSED_TARGETS))
def test_refused_output_folder_leaves_everything_untouched(tmp_path, kind):
    target, inputs = _target(tmp_path, kind)
    before = snapshot(tmp_path)
    with pytest.raises(OutputPathError, match=REFUSED_TARGETS[kind]) as e:
        write_folder(target, _fill, inputs=inputs)
    assert str(target) in str(e.value) or target.name in str(e.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("writer", ["report", "to_csv", "shards"])
def test_refused_every_folder_writer_on_a_user_folder(tmp_path, writer):
    folder = _user_folder(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(OutputPathError, match="thesis exists and was not written by glminterp"):
        if writer == "report":
            rp.ReportBuilder("t", "t").write(folder)
        elif writer == "to_csv":
            tiny_acts().to_csv(folder)
        else:
            write_parquet_shards(pd.DataFrame({"a": [1.0], "label": [0]}), folder, 10)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["missing", "empty", "ours", "legacy_report", "legacy_csv"])
def test_correct_replaceable_folders(tmp_path, kind):
    folder = tmp_path / "R"
    if kind != "missing":
        folder.mkdir()
    if kind == "ours":
        (folder / MARKER_NAME).write_text("{}")
        (folder / "old.txt").write_text("old")
    elif kind == "legacy_report":
        (folder / "provenance.json").write_text(json.dumps({"versions": {"glminterp": "0.1"}}))
    elif kind == "legacy_csv":
        (folder / "metadata.json").write_text(json.dumps({"feature_columns": []}))
        (folder / "obs.csv").write_text("")
    write_folder(folder, _fill)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER_NAME, "a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]  # no lock or temp left


def test_refused_output_parquet_onto_a_folder_or_under_a_file(tmp_path):
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(OutputPathError, match="d.parquet is an existing folder"):
        tiny_acts().to_parquet(tmp_path / "d.parquet")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="f is a file, not a folder"):
        tiny_acts().to_parquet(tmp_path / "f" / "a.parquet")


def test_correct_failed_write_keeps_the_previous_folder_byte_identical(tmp_path):
    folder = tmp_path / "R"
    write_folder(folder, _fill)
    before = snapshot(folder)

    def boom(tmp):
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_folder(folder, boom)
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]


def test_cleans_stale_leftovers_of_killed_writes(tmp_path):
    folder = tmp_path / "R"
    write_folder(folder, _fill)
    for name in (".R.tmp-abc123", ".R.old", ".R.tmp-zzz"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "junk").write_text("left by a killed write")
    write_folder(folder, _fill)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]


def test_cleans_temporaries_of_a_killed_parquet_write(tmp_path):
    for name in (".acts.parquet.k3x9_q2z", ".acts.maps.npz.ab12cd34.npz"):
        (tmp_path / name).write_bytes(b"half-written")
    (tmp_path / ".acts.parquet.notes").write_text("not a temporary: kept")
    tiny_acts(maps=True).to_parquet(tmp_path / "acts.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".acts.parquet.notes", "acts.maps.npz", "acts.parquet"]


def test_cleans_half_swap_by_restoring_the_previous_report(tmp_path):
    folder = tmp_path / "R"
    write_folder(folder, _fill)
    before = snapshot(folder)
    os.replace(folder, tmp_path / ".R.old")  # killed between the two renames of a swap

    def boom(tmp):
        raise RuntimeError("refit failed")

    with pytest.raises(RuntimeError):
        write_folder(folder, boom)
    assert snapshot(folder) == before


# outputs.py needs only the standard library: load it alone, so a writer starts in milliseconds
_LOAD_OUTPUTS = textwrap.dedent(f"""
    import importlib.util
    spec = importlib.util.spec_from_file_location("outputs", {str(ROOT / "glminterp" / "outputs.py")!r})
    outputs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(outputs)
    write_folder = outputs.write_folder
""")
_KILLED_WRITER = _LOAD_OUTPUTS + textwrap.dedent("""
    import sys, time
    from pathlib import Path
    def fill(tmp):
        (tmp / "a.txt").write_text("partial")
        print("writing", flush=True)
        time.sleep(60)
    write_folder(Path(sys.argv[1]), fill)
""")


def test_cleans_leftovers_of_a_sigkilled_writer(tmp_path):
    folder = tmp_path / "R"
    write_folder(folder, _fill)
    before = snapshot(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(folder)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert [p.name for p in tmp_path.glob(".R.tmp-*")]  # the killed write's leftovers
    assert snapshot(folder) == before  # the previous output intact
    write_folder(folder, _fill)  # the next write cleans them (the dead writer's lock is free)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_correct_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        rb = rp.ReportBuilder("t", "t")
        rb.add_file("x.txt", "x")
        rb.write(tmp_path / "R")
        tiny_acts().to_parquet(tmp_path / "a.parquet")
    finally:
        os.umask(old)
    assert (tmp_path / "R").stat().st_mode & 0o777 == 0o777 & ~umask
    for f in (tmp_path / "R" / "x.txt", tmp_path / "R" / rp.HTML_NAME, tmp_path / "a.parquet"):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


_WRITER = _LOAD_OUTPUTS + textwrap.dedent("""
    import sys
    from pathlib import Path
    folder, tag = Path(sys.argv[1]), sys.argv[2]
    for i in range(int(sys.argv[3])):
        def fill(tmp, i=i):
            for j in range(20):
                (tmp / f"f{j}.txt").write_text(f"{tag} {i}")
        write_folder(folder, fill)
""")


def test_concurrent_writers_on_one_folder_never_fail(tmp_path):
    folder = tmp_path / "R"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), tag, "150"], env=env,
                              stderr=subprocess.PIPE, text=True) for tag in ("A", "B")]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    texts = {(folder / f"f{j}.txt").read_text() for j in range(20)}
    assert len(texts) == 1 and texts.pop().split()[1] == "149"  # one whole write, not a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]


# ---------------------------------------------------------------------------- render_html
def _good_refit_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "R"
    coef = pd.DataFrame({"class": ["1", "1"], "term": ["const", "u0"], "coef": [0.1, 0.5],
                         "se": [0.1, 0.2], "z": [1.0, 2.5], "p": [0.3, 0.01],
                         "ci_lower": [-0.1, 0.1], "ci_upper": [0.3, 0.9]})
    rb = rp.ReportBuilder("t", "t")
    rb.add_csv(rp.COEF_NAME, coef)
    rb.add_json(rp.FIT_NAME, {"family": "binomial"})
    rb.write(folder)
    (folder / rp.MANIFEST_NAME).unlink()
    return folder


RENDER_CASES = {
    "report_json_not_json": (lambda f: (f / rp.MANIFEST_NAME).write_text("{oops"), ValueError,
                             "report.json is not a report manifest"),
    "report_json_no_sections": (lambda f: (f / rp.MANIFEST_NAME).write_text('{"title": "t"}'),
                                ValueError, "report.json is not a report manifest"),
    "report_json_a_list": (lambda f: (f / rp.MANIFEST_NAME).write_text("[1, 2]"), ValueError,
                           "report.json is not a report manifest"),
    "coefficients_without_z": (lambda f: (f / rp.COEF_NAME).write_text("class,term,coef\n1,u,2\n"),
                               ValueError, "coefficients.csv lacks the columns ['se', 'z', 'p', 'ci_lower', 'ci_upper']"),
    "coefficients_empty": (lambda f: (f / rp.COEF_NAME).write_text(""), ValueError,
                           "coefficients.csv is not a readable CSV"),
    "coefficients_binary": (lambda f: (f / rp.COEF_NAME).write_bytes(b"\xff\xfe\x00\x81"), ValueError,
                            "coefficients.csv"),
    "fit_json_not_json": (lambda f: (f / rp.FIT_NAME).write_text("{"), ValueError, "fit.json is not valid JSON"),
    "fit_json_a_list": (lambda f: (f / rp.FIT_NAME).write_text("[]"), ValueError, "fit.json holds a JSON list"),
    "no_results": (lambda f: (f / rp.COEF_NAME).unlink(), FileNotFoundError, "has neither report.json"),
    "not_a_folder": (lambda f: (shutil.rmtree(f), f.write_text("x")), FileNotFoundError, "is a file, not a folder"),
    "missing": (lambda f: shutil.rmtree(f), FileNotFoundError, "does not exist"),
    "user_folder_with_report_html": (
        lambda f: ((f / MARKER_NAME).unlink(), (f / rp.HTML_NAME).write_text("my page")),
        OutputPathError, "was not written by glminterp"),
}


@pytest.mark.parametrize("case", list(RENDER_CASES))
def test_refused_render_html(tmp_path, case):
    edit, exc, text = RENDER_CASES[case]
    folder = _good_refit_folder(tmp_path)
    if case.startswith("report_json"):
        rp.render_html(folder)  # a manifest now exists; then break it
    edit(folder)
    before = snapshot(tmp_path)
    with pytest.raises(exc) as e:
        rp.render_html(folder)
    assert _matches(text, str(e.value)) and str(folder) in str(e.value)
    assert snapshot(tmp_path) == before


def test_correct_render_html_rebuilds_a_refit_folder_it_wrote(tmp_path):
    folder = _good_refit_folder(tmp_path)
    assert rp.render_html(folder) == folder / rp.HTML_NAME
    assert (folder / rp.MANIFEST_NAME).is_file() and (folder / "figures" / "forest.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]  # its lock file is gone
