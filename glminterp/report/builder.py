"""Self-contained, reproducible study reports.

A report is a folder::

    report.html          one self-contained page: inline CSS, figures as base64 data URIs
    report.json          the page's content (sections of text, tables and figure names)
    fit.json             fit statistics, agreement test, diagnostics (no timings: byte-stable)
    coefficients.csv     the refit's tidy coefficient table
    provenance.json      versions, seeds, data hash, command line, git revision, timings
    figures/*.png        every figure, without metadata that changes between runs
    ...                  whatever else a study adds (activations.parquet, model.pt, ...)

:class:`ReportBuilder` collects a report in memory and :meth:`ReportBuilder.write` writes it
into a temporary folder which then replaces the target folder, so a run that fails leaves the
previous report intact. :func:`render_html` (re)builds ``report.html`` from a folder's saved
files; it is what ``glminterp report <folder>`` runs.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from glminterp._io import atomic_write
from glminterp.outputs import write_folder

#: Report sections, in page order: (id, title).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Summary"),
    ("data", "Data and splits"),
    ("model", "Model and training"),
    ("fit", "Fit statistics"),
    ("diagnostics", "Diagnostics"),
    ("coefficients", "Coefficient table"),
    ("forest", "Forest plot of the top coefficients"),
    ("heatmap", "z by unit and class"),
    ("agreement", "Network weights versus GLM coefficients"),
    ("cam", "CAM gallery"),
    ("classic", "Classic visualizations"),
    ("provenance", "Provenance"),
)
SECTION_IDS: tuple[str, ...] = tuple(s for s, _ in SECTIONS)

HTML_NAME = "report.html"
MANIFEST_NAME = "report.json"
FIT_NAME = "fit.json"
COEF_NAME = "coefficients.csv"
PROVENANCE_NAME = "provenance.json"
FOLD_ROWS = 10  # tables longer than this show their top rows and fold the rest into <details>
CSV_LINK_MAX_BYTES = 400_000  # larger CSVs are named, not embedded as a download link
FLOAT_DIGITS = 8  # significant digits in JSON/CSV: BLAS threading moves the 10th digit between runs
CSV_FLOAT_FORMAT = f"%.{FLOAT_DIGITS}g"


# ---------------------------------------------------------------------------- JSON helpers
def to_jsonable(obj, digits: int = FLOAT_DIGITS):
    """Convert ``obj`` to plain JSON types with floats rounded to ``digits`` significant digits.

    NaN and infinities become ``None`` (JSON has no such numbers); numpy scalars, arrays,
    pandas Series/DataFrames (records), tuples, dataclasses and paths are converted.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v, digits) for v in obj.tolist()]
    if isinstance(obj, pd.DataFrame):
        frame = obj.reset_index() if not isinstance(obj.index, pd.RangeIndex) else obj
        return [
            {str(k): to_jsonable(v, digits) for k, v in row.items()}
            for row in frame.to_dict(orient="records")
        ]
    if isinstance(obj, pd.Series):
        return {str(k): to_jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v, digits) for v in items]
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_jsonable(getattr(obj, k), digits) for k in obj.__dataclass_fields__}
    if obj is pd.NA:
        return None
    return str(obj)


def dumps(obj) -> str:
    """Deterministic JSON: rounded floats, sorted keys, two-space indent, trailing newline."""
    return json.dumps(to_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"


def format_value(v) -> str:
    """Short human-readable form of a table cell (4 significant digits for floats)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.3e}"
        return f"{x:.4g}"
    return str(v)


def frame_to_csv_bytes(df: pd.DataFrame, *, index: bool = False) -> bytes:
    """CSV with fixed float formatting and ``\\n`` line ends, so reruns are byte-identical."""
    return df.to_csv(index=index, float_format=CSV_FLOAT_FORMAT, lineterminator="\n").encode()


# ---------------------------------------------------------------------------- provenance
def git_revision(path: str | Path | None = None) -> str | None:
    """The git commit of the working tree at ``path`` (None outside a repository or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=str(path or Path(__file__).resolve().parent),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and rev else None


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a report's numbers and figures depend on."""
    from glminterp.activations import CORE_PACKAGES
    from glminterp.activations import package_versions as versions

    return {
        "python": platform.python_version(),
        **versions((*CORE_PACKAGES, "matplotlib", "seaborn", "jinja2")),
    }


def provenance(
    *,
    seeds: Mapping[str, int] | None = None,
    data_hash: str | None = None,
    timings: Mapping[str, float] | None = None,
    command_line: Sequence[str] | None = None,
    extra: Mapping | None = None,
) -> dict:
    """A provenance record: versions, seeds, data hash, command line, git revision, timings.

    Timings and the creation time vary between runs: they go to ``provenance.json`` and the
    page, never to ``fit.json`` or the CSV files.
    """
    return {
        "versions": package_versions(),
        "seeds": dict(seeds or {}),
        "data_sha256": data_hash,
        "command_line": list(sys.argv if command_line is None else command_line),
        "git_revision": git_revision(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch_threads": _torch_threads(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "timings_s": {k: round(float(v), 3) for k, v in (timings or {}).items()},
        **dict(extra or {}),
    }


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        return None


# ---------------------------------------------------------------------------- builder
@dataclass
class ReportBuilder:
    """Collect a report's sections, figures and files in memory, then write them atomically.

    Parameters
    ----------
    title : str
    study : str
        Short name (also the default folder name).

    Examples
    --------
    >>> rb = ReportBuilder("Demo", "demo")  # doctest: +SKIP
    >>> rb.text("data", "1,000 rows.")  # doctest: +SKIP
    >>> rb.write("reports/demo", provenance=provenance(seeds={"split": 0}))  # doctest: +SKIP
    """

    title: str
    study: str
    summary: list[str] = field(default_factory=list)
    sections: dict[str, list[dict]] = field(default_factory=lambda: {s: [] for s in SECTION_IDS})
    files: dict[str, bytes | Callable[[Path], object]] = field(default_factory=dict)

    def _add(self, section: str, block: dict) -> None:
        if section not in self.sections:
            raise KeyError(f"section={section!r} is not a report section; use one of {SECTION_IDS}.")
        self.sections[section].append(block)

    def text(self, section: str, text: str) -> None:
        """A paragraph (plain text; escaped when rendered)."""
        self._add(section, {"kind": "text", "text": str(text)})

    def note(self, section: str, text: str) -> None:
        """A highlighted note, e.g. why a section is not available."""
        self._add(section, {"kind": "note", "text": str(text)})

    def warning(self, section: str, text: str) -> None:
        """A prominent warning (e.g. penalized inference, separation)."""
        self._add(section, {"kind": "warning", "text": str(text)})

    def items(self, section: str, mapping: Mapping, caption: str = "") -> None:
        """A two-column key/value table."""
        rows = [[str(k), format_value(v)] for k, v in mapping.items()]
        self._add(section, {"kind": "items", "caption": caption, "rows": rows})

    def table(
        self, section: str, df: pd.DataFrame, caption: str = "", *, max_rows: int | None = None,
        index: bool = False, csv: str | None = None, top: int = FOLD_ROWS,
    ) -> None:
        """A table of ``df`` (first ``max_rows`` rows; cells formatted to 4 significant digits).

        The page shows the first ``top`` rows; longer tables fold the rest into a
        ``<details>`` element. ``csv`` names the report file holding the whole table (linked
        for download).
        """
        frame = df.reset_index() if index else df
        shown = frame if max_rows is None else frame.head(max_rows)
        rows = [[format_value(v) for v in row] for row in shown.itertuples(index=False)]
        more = len(frame) - len(shown)
        if more > 0:
            caption = f"{caption} (first {len(shown)} of {len(frame)} rows)".strip()
        block = {"kind": "table", "caption": caption, "columns": [str(c) for c in frame.columns],
                 "rows": rows, "n_rows": len(frame), "top": int(top)}
        if csv is not None:
            block["csv"] = csv
        self._add(section, block)

    def bullets(self, section: str, lines: Sequence[str], caption: str = "") -> None:
        """A bulleted list (plain text items)."""
        self._add(section, {"kind": "bullets", "caption": caption,
                            "items": [str(v) for v in lines]})

    def figure(self, section: str, fig, name: str, caption: str = "") -> None:
        """A matplotlib figure, saved as ``figures/<name>.png`` and embedded in the page."""
        from glminterp.plots.report import save_png

        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"figure name {name!r} must be letters, digits, '_' or '-'.")
        rel = f"figures/{name}.png"
        self.files[rel] = save_png(fig)
        self._add(section, {"kind": "figure", "file": rel, "caption": caption})

    def add_file(self, name: str, content: bytes | str | Callable[[Path], object]) -> None:
        """A file in the report folder: bytes, text, or ``writer(path)`` called at write time."""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"file name {name!r} must be a relative path inside the report.")
        self.files[name] = content.encode() if isinstance(content, str) else content

    def add_csv(self, name: str, df: pd.DataFrame, *, index: bool = False) -> None:
        """A CSV file with fixed float formatting."""
        self.add_file(name, frame_to_csv_bytes(df, index=index))

    def add_json(self, name: str, obj) -> None:
        """A JSON file written by :func:`dumps` (rounded floats, sorted keys)."""
        self.add_file(name, dumps(obj))

    def manifest(self) -> dict:
        """The page content as saved in ``report.json``."""
        return {
            "title": self.title,
            "study": self.study,
            "summary": list(self.summary),
            "sections": [
                {"id": s, "title": t, "blocks": self.sections.get(s, [])} for s, t in SECTIONS
            ],
        }

    def write(
        self, folder: str | Path, *, provenance: Mapping | None = None,
        inputs: Sequence[str | Path] = (),
    ) -> Path:
        """Write every file and ``report.html`` into a temporary folder, then swap it in place.

        Only a folder glminterp wrote (it holds the ``.glminterp-report`` marker) or an empty
        one is replaced; see :func:`glminterp.outputs.write_folder`.

        Parameters
        ----------
        folder : path
        provenance : mapping, optional
            Saved as ``provenance.json``.
        inputs : paths
            Files the report was computed from; refused as (or inside) ``folder``.

        Returns
        -------
        Path
            The path of ``report.html`` in ``folder``.

        Raises
        ------
        glminterp.outputs.OutputPathError
            If ``folder`` is a file, an input, or a folder glminterp did not write.
        """
        folder = Path(folder)
        write_folder(folder, lambda tmp: self._fill(tmp, provenance), inputs=inputs)
        return folder / HTML_NAME

    def _fill(self, tmp: Path, provenance: Mapping | None) -> None:
        (tmp / "figures").mkdir()
        for name, content in sorted(self.files.items()):
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(path)
            else:
                path.write_bytes(content)
        (tmp / MANIFEST_NAME).write_text(dumps(self.manifest()))
        (tmp / PROVENANCE_NAME).write_text(
            json.dumps(to_jsonable(dict(provenance or {})), sort_keys=True, indent=2) + "\n"
        )
        (tmp / HTML_NAME).write_text(_render(tmp), encoding="utf-8")


# ---------------------------------------------------------------------------- rendering
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(str(Path(__file__).resolve().parent / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text in ("inf", "-inf")
    return True


def _numeric_columns(block: Mapping) -> list[bool]:
    """Per column: every non-empty cell is a number (right-aligned when rendered)."""
    cols = len(block["columns"])
    return [all(_is_number(r[j]) for r in block["rows"] if j < len(r) and r[j] != "")
            and any(j < len(r) and r[j] != "" for r in block["rows"]) for j in range(cols)]


def _csv_uri(path: Path) -> str | None:
    """The CSV as a percent-encoded ``data:`` URI (a download link that keeps the page
    self-contained), or None when the file is missing or too large to embed."""
    from urllib.parse import quote

    if not path.is_file() or path.stat().st_size > CSV_LINK_MAX_BYTES:
        return None
    return "data:text/csv;charset=utf-8," + quote(path.read_bytes(), safe="")


def _render(folder: Path) -> str:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    prov_path = folder / PROVENANCE_NAME
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    sections = []
    for sec in manifest["sections"]:
        blocks = []
        for b in sec["blocks"]:
            if b["kind"] == "table":
                b = {**b, "numeric": _numeric_columns(b)}
                if b.get("csv"):
                    b["csv_uri"] = _csv_uri(folder / b["csv"])
            if b["kind"] == "figure":
                path = folder / b["file"]
                if not path.is_file():
                    blocks.append({"kind": "note", "text": f"Figure {b['file']} is missing."})
                    continue
                b = {**b, "uri": _data_uri(path)}
            blocks.append(b)
        if sec["id"] == "provenance":
            blocks = _provenance_blocks(prov) + blocks
        if not blocks:
            blocks = [{"kind": "note", "text": "Not available for this report."}]
        sections.append({**sec, "blocks": blocks})
    return _environment().get_template("report.html").render(
        title=manifest["title"], study=manifest["study"], summary=manifest.get("summary", []),
        sections=sections,
    )


def _provenance_blocks(prov: Mapping) -> list[dict]:
    if not prov:
        return [{"kind": "note", "text": f"No {PROVENANCE_NAME} was saved with these results."}]
    blocks = []
    top = {
        k: prov[k]
        for k in ("created_utc", "git_revision", "data_sha256", "platform", "torch_threads")
        if k in prov
    }
    top["command_line"] = " ".join(str(a) for a in prov.get("command_line", []))
    blocks.append({"kind": "items", "caption": "Run", "rows": [[k, format_value(v)] for k, v in top.items()]})
    for key, caption in (("seeds", "Seeds"), ("versions", "Package versions"),
                         ("timings_s", "Timings (seconds)")):
        if prov.get(key):
            rows = [[str(k), format_value(v)] for k, v in prov[key].items()]
            blocks.append({"kind": "items", "caption": caption, "rows": rows})
    return blocks


_COEF_REQUIRED: tuple[str, ...] = ("class", "term", "coef", "se", "z", "p", "ci_lower", "ci_upper")


def render_html(folder: str | Path) -> Path:
    """(Re)build ``report.html`` in ``folder`` from its saved results.

    With a ``report.json`` (written by :class:`ReportBuilder`) the page is rendered from it.
    Without one, the page is built from ``coefficients.csv`` and ``fit.json`` (as written by
    ``glminterp refit``): fit statistics, diagnostics, coefficient table, forest plot, z
    heatmap and weight-versus-coefficient scatter; the figures are (re)drawn into ``figures/``.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds neither ``report.json`` nor ``coefficients.csv``.
    ValueError
        If a saved file is not valid (named in the message).
    glminterp.outputs.OutputPathError
        If the folder was not written by glminterp and rendering would overwrite its files.
    """
    from glminterp.outputs import check_writable_into, locked_folder

    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"report folder {folder} {what}; pass a folder written by "
                                "`glminterp run` or `glminterp refit`.")
    with locked_folder(folder):
        check_writable_into(folder, [HTML_NAME])
        if not (folder / MANIFEST_NAME).is_file():
            _rebuild_manifest(folder)
        try:
            html = _render(folder)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{folder / MANIFEST_NAME} is not a report manifest glminterp can render "
                f"({type(e).__name__}: {e}); rewrite the report with `glminterp run` or "
                "`glminterp refit`."
            ) from e
        out = folder / HTML_NAME
        atomic_write(out, lambda p: Path(p).write_text(html, encoding="utf-8"))
    return out


def _read_json_file(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rewrite it with `glminterp refit`.") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a JSON {type(obj).__name__}, not an object; rewrite it.")
    return obj


def _read_coefficients(path: Path) -> pd.DataFrame:
    try:
        coef = pd.read_csv(path, dtype={"class": str, "term": str})
    except (ValueError, UnicodeDecodeError) as e:  # pandas' parser errors are ValueErrors
        raise ValueError(f"{path} is not a readable CSV table ({e}); rewrite it with "
                         "`glminterp refit`.") from e
    missing = [c for c in _COEF_REQUIRED if c not in coef.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing} (it needs {list(_COEF_REQUIRED)}); "
                         "rewrite it with `glminterp refit`.")
    return coef


def _rebuild_manifest(folder: Path) -> None:
    """The sections of a refit folder from its coefficients.csv and fit.json."""
    from glminterp.outputs import check_writable_into

    if not (folder / COEF_NAME).is_file():
        raise FileNotFoundError(
            f"{folder} has neither {MANIFEST_NAME} nor {COEF_NAME}: point to a folder written "
            "by `glminterp run` or `glminterp refit`."
        )
    coef = _read_coefficients(folder / COEF_NAME)
    fit = _read_json_file(folder / FIT_NAME) if (folder / FIT_NAME).is_file() else {}
    rb = ReportBuilder(f"GLM refit: {folder.name}", folder.name)
    add_refit_sections(rb, coef, fit)
    check_writable_into(folder, [*rb.files, MANIFEST_NAME, HTML_NAME])
    (folder / "figures").mkdir(exist_ok=True)
    for name, content in rb.files.items():
        atomic_write(folder / name, lambda p, c=content: Path(p).write_bytes(c))
    atomic_write(folder / MANIFEST_NAME, lambda p: Path(p).write_text(dumps(rb.manifest())))


# ---------------------------------------------------------------------------- refit sections
_FIT_KEYS: tuple[str, ...] = (
    "family", "parametrization", "cov_type", "n_obs", "n_params", "llf", "llnull", "deviance",
    "null_deviance", "lr_stat", "lr_df", "lr_pvalue", "aic", "bic", "pseudo_r2",
    "events_per_parameter", "converged",
)


_MAX_LR_UNITS = 64


def refit_fit_record(refit) -> dict:
    """Everything about a refit that belongs in ``fit.json``: statistics, tests, diagnostics.

    Reads the :class:`glminterp.refit.RefitResult` public attributes that apply to this result
    (``fit_stats``, ``agreement_test``, ``diagnostics``, ``unit_tests``, ``unit_lr_tests`` for
    heads of at most 64 units, ``separation``, ``remedy``, ``dropped_units``) and converts them
    to JSON types. Timings are never included.
    """
    rec: dict = {
        "family": getattr(refit, "family", None),
        "parametrization": getattr(refit, "parametrization", None),
        "alpha": getattr(refit, "alpha", None),
        "classes": list(getattr(refit, "classes", ())),
        "terms": list(getattr(refit, "terms", ())),
        "n_obs": getattr(refit, "n_obs", None),
    }
    for key, name in (("fit", "fit_stats"), ("agreement", "agreement_test"),
                      ("diagnostics", "diagnostics")):
        val = _safe_attr(refit, name)
        if val is not None:
            rec[key] = _as_mapping(val)
    val = _safe_attr(refit, "unit_tests")
    if isinstance(val, pd.DataFrame):
        rec["unit_tests"] = val
    if len(getattr(refit, "units", ())) <= _MAX_LR_UNITS:
        # one refit per unit: affordable for the report's small heads, skipped for wide ones
        lr = _safe_attr(refit, "unit_lr_tests")
        if isinstance(lr, pd.DataFrame):
            rec["unit_lr_tests"] = lr
    sep = _safe_attr(refit, "separation")
    if isinstance(sep, pd.DataFrame):
        rec["separation"] = sep
    remedy = _safe_attr(refit, "remedy")
    if remedy is not None:
        rec["remedy"] = {"name": remedy, "inference": _safe_attr(refit, "inference")}
        loadings = _safe_attr(refit, "pca_loadings")
        if isinstance(loadings, pd.DataFrame):
            rec["remedy"]["pca_loadings"] = loadings.rename_axis("unit")
    dropped = _safe_attr(refit, "dropped_units")
    if isinstance(dropped, pd.DataFrame):
        rec["dropped_units"] = dropped
    for name in ("warnings", "notes"):
        val = _safe_attr(refit, name)
        if val:
            rec[name] = list(val) if not isinstance(val, str) else [val]
    return to_jsonable(rec)


def _safe_attr(obj, name: str):
    """``obj.name`` (called if a method), or None where it does not apply to this result."""
    try:
        val = getattr(obj, name)
        return val() if callable(val) and not isinstance(val, pd.DataFrame) else val
    except (AttributeError, ValueError, TypeError, KeyError):
        return None


def _as_mapping(val):
    if isinstance(val, pd.DataFrame):
        return val
    if isinstance(val, pd.Series):
        return val.to_dict()
    if isinstance(val, Mapping):
        return dict(val)
    if hasattr(val, "__dataclass_fields__"):
        return {k: getattr(val, k) for k in val.__dataclass_fields__}
    if hasattr(val, "_asdict"):
        return val._asdict()
    return {"value": val}


def top_units(coefficients: pd.DataFrame, n: int = 3) -> dict[str, pd.DataFrame]:
    """The ``n`` most significant unit coefficients per class (smallest p, then largest |z|)."""
    units = coefficients[coefficients["term"] != "const"].copy()
    units["_absz"] = units["z"].abs()
    out = {}
    for cls, grp in units.groupby("class", sort=False):
        grp = grp.sort_values(["p", "_absz"], ascending=[True, False], kind="stable")
        out[str(cls)] = grp.head(n).drop(columns="_absz")
    return out


def _flat_items(mapping: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat_items(v, key + "."))
        elif isinstance(v, (list, tuple)) and len(v) > 8:
            out[key] = f"{len(v)} values"
        elif isinstance(v, (list, tuple)):
            out[key] = ", ".join(format_value(x) for x in v)
        else:
            out[key] = v
    return out


def add_refit_sections(
    rb: ReportBuilder, coefficients: pd.DataFrame, fit: Mapping, *, top: int = 20,
    table_rows: int = 60,
) -> None:
    """Fit statistics, diagnostics, coefficient table, forest plot, z heatmap, agreement.

    Works from saved results only (the tidy coefficient table and the ``fit.json`` record), so
    ``glminterp report`` can rebuild these sections without the fitted model.
    """
    fit = dict(fit)
    alpha = float(fit.get("alpha") or 0.05)
    remedy = fit.get("remedy")
    _fit_section(rb, fit, remedy)
    _diagnostics_section(rb, fit, remedy)
    _overview(rb, coefficients, fit, alpha)
    if coefficients is None or coefficients.empty:
        for sec in ("coefficients", "forest", "heatmap", "agreement"):
            rb.note(sec, "Not available: no coefficients (the refit did not run or failed).")
        return
    coef = _coefficient_tables(rb, coefficients, fit, table_rows)
    _coefficient_figures(rb, coefficients, coef, top, alpha)
    _agreement_section(rb, coefficients, coef, fit, alpha)


def _has_remedy(remedy: object) -> bool:
    """Whether the refit record names a remedy (penalized or reduced inference)."""
    return isinstance(remedy, Mapping) and bool(remedy.get("name"))


def _fit_section(rb: ReportBuilder, fit: Mapping, remedy: object) -> None:
    """Fit statistics, the refit's error if any, and the remedy warning."""
    stats = fit.get("fit") or {}
    head = {k: fit[k] for k in ("family", "parametrization", "n_obs", "alpha") if fit.get(k) is not None}
    items = {**head, **_flat_items(stats)} if isinstance(stats, Mapping) else head
    if items:
        rb.items("fit", items, caption="Model fit on the refit split")
    if fit.get("error"):
        rb.note("fit", f"The refit failed: {fit['error']}")
    if _has_remedy(remedy):
        msg = (f"PENALIZED / REDUCED INFERENCE: this refit used remedy={remedy['name']!r}, not "
               f"the maximum-likelihood estimate. {remedy.get('inference') or ''}".strip())
        rb.warning("fit", msg)
        rb.warning("coefficients", msg)


def _diagnostics_section(rb: ReportBuilder, fit: Mapping, remedy: object) -> None:
    """Checks before and after fitting: separation, PCA loadings, EPP, dropped units, warnings."""
    diag = fit.get("diagnostics")
    if isinstance(diag, Mapping) and diag:
        shown = {k: v for k, v in diag.items() if k != "separation"}
        rb.items("diagnostics", _flat_items(shown), caption="Checks before and after fitting")
    elif isinstance(diag, list) and diag:
        rb.table("diagnostics", pd.DataFrame(diag), caption="Diagnostics")
    _separation_table(rb, fit.get("separation"), remedy)
    if isinstance(remedy, Mapping) and remedy.get("pca_loadings"):
        rb.table("diagnostics", pd.DataFrame(remedy["pca_loadings"]), max_rows=40,
                 caption="PCA remedy: loadings of the units on the components used")
    epp = (fit.get("study") or {}).get("events_per_parameter")
    if epp is not None:
        rb.items("diagnostics", {"events per parameter": epp}, caption="Rows of the rarest class "
                 "in the refit split per live unit (de Jong et al. 2019); below 10 the MLE is "
                 "biased and Wald tests can be miscalibrated")
    dropped = fit.get("dropped_units")
    if dropped:
        rb.table("diagnostics", pd.DataFrame(dropped), caption="Dropped units (dead or collinear)")
    elif dropped is not None:
        rb.text("diagnostics", "No unit was dropped (no dead or collinear units).")
    for w in fit.get("warnings") or []:
        rb.note("diagnostics", str(w))
    if not rb.sections["diagnostics"]:
        rb.note("diagnostics", "The refit recorded no diagnostics.")


def _separation_table(rb: ReportBuilder, sep: object, remedy: object) -> None:
    """The separation check's table, and a warning when separation was found and not remedied."""
    if not sep:
        return
    frame = pd.DataFrame(sep)
    n_sep = int(frame["separated"].astype(bool).sum()) if "separated" in frame else 0
    rb.table("diagnostics", frame, caption="Separation check before the fit (Konis 2007 "
             "linear program): a separated check means the maximum-likelihood estimate does "
             "not exist for it; units are the separating direction's, largest first")
    if n_sep and not _has_remedy(remedy):
        rb.warning("diagnostics", f"{n_sep} separation check(s) found (quasi-)complete "
                   "separation: the maximum-likelihood estimate does not exist.")


def _coefficient_tables(rb: ReportBuilder, coefficients: pd.DataFrame, fit: Mapping,
                        table_rows: int) -> pd.DataFrame:
    """The coefficient table sorted by |z| and the per-unit tests; returns the sorted table."""
    coef = coefficients.copy()
    coef = coef.reindex(coef["z"].abs().sort_values(ascending=False, kind="stable").index)
    cols = [c for c in ("class", "term", "coef", "se", "z", "p", "p_holm", "p_bh", "ci_lower",
                        "ci_upper", "p_wald", "chi2_plr", "network_weight") if c in coef.columns]
    rb.table("coefficients", coef[cols], caption="Sorted by |z|; Holm and Benjamini-Hochberg "
             "corrections across all unit coefficients (intercepts excluded)", max_rows=table_rows,
             csv=COEF_NAME)
    unit_tests = fit.get("unit_tests")
    if unit_tests:
        ut = pd.DataFrame(unit_tests)
        rb.add_csv("unit_tests.csv", ut)
        rb.table("coefficients", ut, caption="Per-unit joint Wald test (does the unit matter for "
                 "any class?)", max_rows=table_rows, csv="unit_tests.csv")
    unit_lr = fit.get("unit_lr_tests")
    if unit_lr:
        rb.add_csv("unit_lr_tests.csv", pd.DataFrame(unit_lr))
        rb.table("coefficients", pd.DataFrame(unit_lr), caption="Per-unit likelihood-ratio test "
                 "(refit without the unit; preferred to Wald when events per parameter are few)",
                 max_rows=table_rows, csv="unit_lr_tests.csv")
    return coef


def _coefficient_figures(rb: ReportBuilder, coefficients: pd.DataFrame, coef: pd.DataFrame,
                         top: int, alpha: float) -> None:
    """The forest plot of the top coefficients and the z heatmap."""
    from glminterp.plots import refit as refit_plots

    rb.figure("forest", refit_plots.forest_plot(coef, top=top, alpha=alpha), "forest",
              caption=f"Top {top} unit coefficients by |z| with {100 * (1 - alpha):g}% CIs; "
              "red: significant after Holm correction.")
    rb.figure("heatmap", refit_plots.z_heatmap(coefficients), "z_heatmap",
              caption="Wald z of every unit coefficient, per class.")


def _agreement_section(rb: ReportBuilder, coefficients: pd.DataFrame, coef: pd.DataFrame,
                       fit: Mapping, alpha: float) -> None:
    """Network weights against the GLM's estimates, and the head-equals-MLE Wald test."""
    from glminterp.plots import analysis as analysis_plots
    from glminterp.report import summary as summ

    comparison = (summ.comparison_frame(coefficients, alpha)
                  if "network_weight" in coef.columns else pd.DataFrame())
    if len(comparison):
        rb.figure("agreement", analysis_plots.agreement_panels(comparison), "weights_vs_coef",
                  caption="Each point is one unit of one class, with the network's weight and "
                  "the GLM's estimate both divided by the GLM's standard error: the y axis is the "
                  f"Wald z with its {100 * (1 - alpha):g}% CI as bars, and a bar crossing the "
                  "dashed line y = x means the network's weight lies inside the GLM's CI (red: "
                  "significant after Holm correction)."
                  + (f" {comparison.attrs['n_degenerate']} coefficients of near-constant units "
                     "(SE below a thousandth of the median) are not drawn."
                     if comparison.attrs.get("n_degenerate") else ""))
    else:
        rb.note("agreement", "Network weights are not available for this refit.")
    ag = fit.get("agreement")
    if isinstance(ag, Mapping) and ag:
        rb.items("agreement", _flat_items(ag),
                 caption="Wald test of H0: the network's head equals the refit MLE")
    else:
        rb.note("agreement", "The agreement test was not recorded for this refit.")


def _overview(rb: ReportBuilder, coefficients: pd.DataFrame | None, fit: Mapping,
              alpha: float) -> None:
    """The first screen's results: units that matter, the agreement test, what limits them."""
    from glminterp.report import summary as summ

    if coefficients is not None and not coefficients.empty and "se" in coefficients:
        rb.table("overview", summ.headline_table(coefficients, alpha), top=100,
                 caption=f"Units that matter per class: Holm-corrected p < {alpha:g}, strongest "
                 "by |z|, with Bonferroni-simultaneous CIs over all unit coefficients"
                 + (" (each class against the reference class)"
                    if fit.get("parametrization") == "reference" else ""))
    rb.text("overview", "Agreement of the network's head with the GLM: "
            + summ.agreement_sentence(fit.get("agreement")))
    lim = summ.limits(fit)
    rb.bullets("overview", lim or ["None of the checks (events per parameter, separation, "
                                   "training-row overlap, dropped units, conditioning) limits "
                                   "the inference."], caption="What limits the inference")
