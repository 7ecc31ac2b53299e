"""Hostile command lines: one ``error:`` line naming what was wrong, non-zero exit, no traceback.

Outcome groups: ``test_cli_error`` (exit 1) and ``test_cli_usage_error`` (exit 2) are refused
with one line; ``test_cli_keeps_*`` show that nothing of the user's was touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _hostile_support import (
    assert_one_line_error,
    cli,
    cli_files,  # noqa: F401 - the session fixture
    cli_subprocess,
    snapshot,
    tiny_acts,
)

import glminterp as gi
from glminterp.data import write_idx
from glminterp.errors import RefitFailedError
from glminterp.outputs import MARKER_NAME
from glminterp.report import builder as rp
from glminterp.report import studies


def _copy_acts(f, tmp: Path, name: str = "a.parquet") -> Path:
    dst = tmp / name
    shutil.copy(f["acts"], dst)
    return dst


def _dup_ids(f, tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(f["acts"])
    df = table.to_pandas()
    df.loc[1, "sample_id"] = df.loc[0, "sample_id"]
    out = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(table.schema.metadata)
    pq.write_table(out, tmp / "dup.parquet")
    return tmp / "dup.parquet"


def _write(tmp: Path, name: str, data: bytes | str) -> Path:
    p = tmp / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def _user_dir(tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("keep")
    return tmp / "mine"


def _ckpt_copy(f, tmp: Path, sidecar: str | None = None, body: bytes | None = None) -> Path:
    dst = tmp / "m.pt"
    shutil.copy(f["ckpt"], dst)
    shutil.copy(f["ckpt"].with_suffix(".json"), tmp / "m.json")
    if sidecar is not None:
        (tmp / "m.json").write_text(sidecar)
    if body is not None:
        dst.write_bytes(body)
    return dst


def _idx_folder(tmp: Path, side: int = 28, corrupt: bool = False) -> Path:
    folder = tmp / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 255, (60, side, side), dtype=np.uint8))
    labels = write_idx(folder / "train-labels-idx1-ubyte", np.arange(60, dtype=np.uint8) % 10)
    if corrupt:
        labels.write_bytes(labels.read_bytes()[:-5])
    return folder


# Each case: argv builder (fixture files, tmp folder) -> argv, and the texts the error names.
ERROR_CASES = {
    # refit
    "refit_missing_file": (lambda f, t: ["refit", "nonexist.parquet", "--out", t / "R"],
                           ["nonexist.parquet does not exist"]),
    "refit_corrupt_parquet": (lambda f, t: ["refit", _write(t, "bad.parquet", b"junk"), "--out", t / "R"],
                              ["bad.parquet is not a readable Parquet file"]),
    "refit_empty_file": (lambda f, t: ["refit", _write(t, "e.parquet", b""), "--out", t / "R"],
                         ["e.parquet is not a readable Parquet file"]),
    "refit_folder_as_input": (lambda f, t: ["refit", t, "--out", t / "R"], ["is a folder"]),
    "refit_out_is_the_input": (lambda f, t: ["refit", (a := _copy_acts(f, t)), "--out", a],
                               ["a.parquet would replace the input"]),
    "refit_out_holds_the_input": (lambda f, t: ["refit", f["report"].parent / "acts.parquet", "--out",
                                                f["report"].parent], ["would replace the input"]),
    "refit_out_user_folder": (lambda f, t: ["refit", f["acts"], "--out", _user_dir(t)],
                              ["mine exists and was not written by glminterp"]),
    "refit_out_existing_file": (lambda f, t: ["refit", f["acts"], "--out", _write(t, "x.txt", "x")],
                                ["x.txt is an existing file"]),
    "refit_out_under_a_file": (lambda f, t: ["refit", f["acts"], "--out", _write(t, "x.txt", "x") / "R"],
                               ["x.txt is a file, not a folder"]),
    "refit_unknown_split": (lambda f, t: ["refit", f["acts"], "--out", t / "R", "--split", "nope"],
                            ["split ['nope'] not in the data"]),
    "refit_duplicate_ids": (lambda f, t: ["refit", _dup_ids(f, t), "--out", t / "R"],
                            ["dup.parquet: column sample_id has 1 duplicated ids"]),
    "refit_plain_parquet": (lambda f, t: ["refit", _plain_parquet(t), "--out", t / "R"],
                            ["plain.parquet has no glminterp metadata"]),
    "refit_separated_rows": (lambda f, t: ["refit", tiny_acts(12).to_parquet(t / "tiny.parquet"), "--out",
                                           t / "R", "--split", "all", "--quiet"],
                             ["completely separated", "act:00"]),
    # report
    "report_missing_folder": (lambda f, t: ["report", t / "nothere"], ["nothere does not exist"]),
    "report_on_a_file": (lambda f, t: ["report", _write(t, "x.txt", "x")], ["x.txt is a file, not a folder"]),
    "report_empty_folder": (lambda f, t: ["report", t], ["has neither report.json nor coefficients.csv"]),
    "report_bad_report_json": (lambda f, t: ["report", _broken_report(f, t, "report.json", "{oops")],
                               ["report.json is not a report manifest"]),
    "report_coefficients_without_z": (lambda f, t: ["report", _refit_only(f, t, "class,term,coef\n1,u,2\n")],
                                      ["coefficients.csv lacks the columns ['se', 'z'"]),
    "report_bad_fit_json": (lambda f, t: ["report", _broken_report(f, t, "fit.json", "{", manifest=False)],
                            ["fit.json is not valid JSON"]),
    "report_user_folder": (lambda f, t: ["report", _user_report(f, t)], ["was not written by glminterp"]),
    # extract
    "extract_missing_checkpoint": (lambda f, t: ["extract", "--checkpoint", t / "no.pt", "--out", t / "a.parquet"],
                                   ["checkpoint", "no.pt does not exist"]),
    "extract_corrupt_checkpoint": (lambda f, t: ["extract", "--checkpoint", _ckpt_copy(f, t, body=b"junk"),
                                                 "--out", t / "a.parquet"], ["m.pt is not a weights-only"]),
    "extract_pickled_code": (lambda f, t: ["extract", "--checkpoint", _ckpt_copy(f, t, body=_pickled_code()),
                                           "--out", t / "a.parquet"], ["m.pt is not a weights-only"]),
    "extract_bad_sidecar": (lambda f, t: ["extract", "--checkpoint", _ckpt_copy(f, t, sidecar="{"),
                                          "--out", t / "a.parquet"], ["m.json is not valid JSON"]),
    "extract_wrong_architecture": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--architecture",
                                                 "gap_cnn", "--dataset", "digits", "--out", t / "a.parquet"],
                                   ["does not fit architecture 'gap_cnn'"]),
    "extract_mismatched_sizes": (lambda f, t: ["extract", "--checkpoint", _ckpt_copy(
        f, t, sidecar='{"architecture": "mlp", "config": {"n_inputs": 64, "n_hidden": 9, "n_classes": 10}}'),
        "--dataset", "digits", "--out", t / "a.parquet"], ["does not fit architecture 'mlp'"]),
    "extract_unknown_architecture": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--architecture",
                                                   "resnet", "--out", t / "a.parquet"],
                                     ["architecture='resnet' is not known"]),
    "extract_wrong_input_size": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--dataset", "mnist-idx",
                                               "--path", _idx_folder(t), "--out", t / "a.parquet"],
                                 ["takes inputs of shape (1, 8, 8)", "(1, 28, 28)"]),
    "extract_idx_without_path": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--dataset", "mnist-idx",
                                               "--out", t / "a.parquet"], ["needs path="]),
    "extract_idx_missing_folder": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--dataset", "mnist-idx",
                                                 "--path", t / "none", "--out", t / "a.parquet"],
                                   ["none has no train-images-idx3-ubyte"]),
    "extract_idx_corrupt": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--dataset", "mnist-idx",
                                          "--path", _idx_folder(t, 8, corrupt=True), "--out", t / "a.parquet"],
                            ["train-labels-idx1-ubyte: file truncated"]),
    "extract_out_is_checkpoint": (lambda f, t: ["extract", "--checkpoint", (c := _ckpt_copy(f, t)), "--out", c],
                                  ["m.pt would replace the input"]),
    "extract_out_user_folder": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--dataset", "digits",
                                              "--out", _user_dir(t)], ["mine exists and was not written"]),
    "extract_out_parquet_folder": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--dataset", "digits",
                                                 "--out", _mkdir(t / "d.parquet")], ["d.parquet is an existing folder"]),
    "extract_out_under_a_file": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--out",
                                               _write(t, "x.txt", "x") / "a.parquet"], ["x.txt is a file"]),
    "extract_unknown_layer": (lambda f, t: ["extract", "--checkpoint", f["ckpt"], "--dataset", "digits",
                                            "--layers", "fc9", "--out", t / "a.parquet", "--quiet"],
                              ["fc9"]),
    # run
    "run_idx_without_path": (lambda f, t: ["run", "mnist_idx", "--out", t], ["idx_path"]),
    "run_idx_missing_folder": (lambda f, t: ["run", "mnist_idx", "--idx-path", t / "none", "--out", t],
                               ["none has no train-images-idx3-ubyte"]),
    "run_out_under_a_file": (lambda f, t: ["run", "mnist_idx", "--idx-path", _idx_folder(t), "--out",
                                           _write(t, "x.txt", "x"), "--quiet"], ["x.txt is a file"]),
    "run_out_user_folder": (lambda f, t: ["run", "mnist_idx", "--idx-path", _idx_folder(t), "--out", t,
                                          "--quiet"] if _user_dir_named(t, "mnist_idx") else [],
                            ["mnist_idx exists and was not written by glminterp"]),
}


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _user_dir_named(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    (tmp / name / "data.bin").write_bytes(b"mine")
    return tmp / name


def _plain_parquet(tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sample_id": ["a"], "x": [1.0]}), tmp / "plain.parquet")
    return tmp / "plain.parquet"


def _pickled_code() -> bytes:
    import io
    import pickle

    buf = io.BytesIO()
    pickle.dump({"weight": print}, buf)  # a callable: code, refused by weights_only
    return buf.getvalue()


def _broken_report(f, tmp: Path, name: str, text: str, manifest: bool = True) -> Path:
    folder = tmp / "R"
    shutil.copytree(f["report"], folder)
    if not manifest:
        (folder / rp.MANIFEST_NAME).unlink()
    (folder / name).write_text(text)
    return folder


def _refit_only(f, tmp: Path, coef: str) -> Path:
    folder = _broken_report(f, tmp, rp.COEF_NAME, coef, manifest=False)
    return folder


def _user_report(f, tmp: Path) -> Path:
    folder = tmp / "R"
    shutil.copytree(f["report"], folder)
    (folder / MARKER_NAME).unlink()
    (folder / "provenance.json").unlink()
    return folder


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_cli_error(case, cli_files, tmp_path, capsys):  # noqa: F811
    build, needles = ERROR_CASES[case]
    argv = build(cli_files, tmp_path)  # (builds the hostile files first)
    before = snapshot(tmp_path)
    code, _, err = cli(argv, capsys)
    assert_one_line_error(code, err, *needles)
    assert "error: " + "'" not in err and len(err.split("error: ", 1)[1]) > 30  # a sentence
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced


USAGE_CASES = {
    "unknown_command": ["frobnicate"],
    "refit_alpha_text": ["refit", "a.parquet", "--out", "R", "--alpha", "x"],
    "refit_alpha_zero": ["refit", "a.parquet", "--out", "R", "--alpha", "0"],
    "refit_alpha_above_one": ["refit", "a.parquet", "--out", "R", "--alpha", "1.5"],
    "refit_unknown_family": ["refit", "a.parquet", "--out", "R", "--family", "poisson"],
    "refit_unknown_engine": ["refit", "a.parquet", "--out", "R", "--engine", "gpu"],
    "refit_no_out": ["refit", "a.parquet"],
    "run_unknown_study": ["run", "mnist_resnet"],
    "run_size_float": ["run", "--size", "2.5"],
    "run_size_one": ["run", "--size", "1"],
    "run_epochs_zero": ["run", "--epochs", "0"],
    "run_seed_negative": ["run", "--seed", "-1"],
    "run_seed_text": ["run", "--seed", "abc"],
    "run_unknown_remedy": ["run", "--remedy", "lasso"],
    "extract_no_checkpoint": ["extract", "--out", "a.parquet"],
    "extract_unknown_dataset": ["extract", "--checkpoint", "m.pt", "--out", "a", "--dataset", "cifar"],
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_cli_usage_error(case, capsys):
    code, _, err = cli(USAGE_CASES[case], capsys)
    assert_one_line_error(code, err, status=2)
    assert "--help" in err


def test_cli_permission_error_is_one_line(cli_files, tmp_path, capsys, monkeypatch):  # noqa: F811
    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(gi.Activations, "read_parquet", staticmethod(denied))
    code, _, err = cli(["refit", cli_files["acts"], "--out", tmp_path / "R"], capsys)
    assert_one_line_error(code, err, "permission denied:", "acts.parquet")


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device", "big.bin"), MemoryError(),
                                 KeyError("z"), RuntimeError("boom\nsecond line"),
                                 np.linalg.LinAlgError("Singular matrix")],
                         ids=["no_space", "memory", "bare_key", "unexpected", "singular"])
def test_cli_unexpected_failures_are_one_line(cli_files, tmp_path, capsys, monkeypatch, exc):  # noqa: F811
    def fail(path):
        raise exc

    monkeypatch.setattr(gi.Activations, "read_parquet", staticmethod(fail))
    code, _, err = cli(["refit", cli_files["acts"], "--out", tmp_path / "R"], capsys)
    assert_one_line_error(code, err)
    assert "error: 'z'" not in err
    assert any(w in err for w in ("--debug", "space", "memory", "collinear"))


# ---------------------------------------------------------------------------- data kept
def test_cli_keeps_a_non_report_folder_and_the_input_untouched(cli_files, tmp_path, capsys):  # noqa: F811
    acts = _copy_acts(cli_files, tmp_path)
    mine = _user_dir(tmp_path)
    before = snapshot(tmp_path)
    for out in (mine, acts):
        code, _, err = cli(["refit", acts, "--out", out, "--quiet"], capsys)
        assert_one_line_error(code, err, out.name)
    assert snapshot(tmp_path) == before
    assert gi.Activations.read_parquet(acts).features.shape == (1797, 4)  # still the input


def test_cli_rewrites_its_own_report(cli_files, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "R"
    shutil.copytree(cli_files["report"], out)
    before = snapshot(out)
    code, _, err = cli(["refit", cli_files["acts"], "--out", out, "--quiet"], capsys)
    assert code == 0, err
    after = snapshot(out)
    assert {k for k in before} == {k for k in after}
    assert after[Path(rp.COEF_NAME)] == before[Path(rp.COEF_NAME)]  # byte-identical rerun


def _tiny_zero_one(monkeypatch):
    """The zero-one study on the 8x8 digits: seconds instead of minutes."""
    monkeypatch.setattr(studies, "_mnist5k", gi.load_digits)


@pytest.mark.filterwarnings("ignore")
def test_cli_keeps_the_previous_report_when_the_refit_fails(tmp_path, capsys, monkeypatch):
    _tiny_zero_one(monkeypatch)
    argv = ["run", "mnist_zero_one", "--out", tmp_path, "--size", "120", "--epochs", "1", "--quiet"]
    code, _, err = cli(argv, capsys)
    assert code == 0, err
    report = tmp_path / "mnist_zero_one"
    before = snapshot(report)
    assert before[Path(rp.COEF_NAME)].count(b"\n") > 1  # a real coefficient table

    def failing_refit(*args, **kwargs):
        raise ValueError("the refit rows hold a single class")

    monkeypatch.setattr(gi, "refit_output_layer", failing_refit)
    code, out, err = cli(argv, capsys)
    assert_one_line_error(code, err, "the GLM refit failed", "single class", "left as it was")
    assert snapshot(report) == before  # byte-identical: coefficients.csv not emptied
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist_zero_one"]
    with pytest.raises(RefitFailedError):
        studies.run_study("mnist_zero_one", tmp_path, progress=False, size=120, epochs=1)
    assert snapshot(report) == before


@pytest.mark.filterwarnings("ignore")
def test_cli_run_refuses_a_user_folder_before_training(tmp_path, capsys, monkeypatch):
    _tiny_zero_one(monkeypatch)
    trained = []
    monkeypatch.setattr(studies, "train_model", lambda *a, **k: trained.append(1))
    mine = _user_dir_named(tmp_path, "mnist_zero_one")
    before = snapshot(tmp_path)
    code, _, err = cli(["run", "mnist_zero_one", "--out", tmp_path, "--quiet"], capsys)
    assert_one_line_error(code, err, str(mine), "was not written by glminterp")
    assert trained == [] and snapshot(tmp_path) == before


def test_cli_warns_for_a_cnn_checkpoint_on_another_input_size(tmp_path, capsys):
    model = gi.build_model("gap_cnn", seed=0, widths=(2, 2, 3), n_classes=10)
    ckpt = gi.save_checkpoint(model, tmp_path / "cnn.pt", architecture="gap_cnn",
                              widths=[2, 2, 3], n_classes=10, input_shape=(1, 8, 8))
    idx = _idx_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"trained on inputs of shape \(1, 8, 8\)"):
        code, _, err = cli(["extract", "--checkpoint", ckpt, "--dataset", "mnist-idx", "--path", idx,
                            "--out", tmp_path / "a.parquet", "--quiet"], capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------- subprocesses
SUBPROCESS_CASES = {
    "missing_file": (["refit", "nonexist.parquet", "--out", "R"], 1, "nonexist.parquet does not exist"),
    "out_is_input": (["refit", "bad.parquet", "--out", "bad.parquet"], 1, "would replace the input"),
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_cli_subprocess_error(tmp_path, case):
    argv, status, needle = SUBPROCESS_CASES[case]
    (tmp_path / "bad.parquet").write_bytes(b"junk")
    proc = cli_subprocess(argv, tmp_path)
    assert_one_line_error(proc.returncode, proc.stderr, needle, status=status)
    assert (tmp_path / "bad.parquet").read_bytes() == b"junk"


def test_cli_debug_shows_the_traceback(tmp_path):
    proc = cli_subprocess(["--debug", "refit", "nonexist.parquet", "--out", "R"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and proc.stderr.rstrip().splitlines()[-1].startswith("error:")


def test_describe_never_prints_a_bare_name():
    from glminterp.cli_errors import describe

    assert describe(FileNotFoundError(2, "No such file or directory", "nonexist.parquet")) == (
        "nonexist.parquet does not exist. Check the path (and the current folder).")
    assert describe(KeyError("z")).startswith("missing entry 'z'")
    assert "\n" not in describe(ValueError("a\nb"))
    assert torch is not None  # (torch imported for the fixture's models)
