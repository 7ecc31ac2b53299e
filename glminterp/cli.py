"""The ``glminterp`` command line (also ``python -m glminterp``).

Four steps, each usable alone::

    glminterp run mnist_gap_cnn                 # train, extract, refit, CAMs, report
    glminterp extract --checkpoint model.pt --dataset mnist5k --out acts.parquet
    glminterp refit acts.parquet --out refit/    # GLM refit of the head, with a report
    glminterp report refit/                      # re-render report.html from saved results
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from glminterp.cli_errors import ErrorParser, describe

_DESCRIPTION = """\
Read the output layer of a trained network as the GLM it is.

Steps (each a subcommand; `glminterp <step> --help` for details):
  run      run a whole study: train the network on the train split, extract the head's input
           activations, refit the head as a GLM on the held-out refit split, cross-reference
           with CAMs / classic visualizations, and write reports/<study>/report.html
  analyze  the same for your own trained network (--model module:factory --checkpoint
           weights.pt --images FOLDER | --npz | --idx | --activations), nothing retrained
  extract  load a saved model (state dict + architecture name), run it over a data set and
           write the head's input activations (or chosen layers) to Parquet or CSV
  refit    refit the head from saved activations (Parquet) as a statsmodels GLM and write
           coefficients.csv, fit.json and a report into a folder
  report   re-render report.html from a folder of saved results
"""


def _parser() -> argparse.ArgumentParser:
    p = ErrorParser(
        prog="glminterp", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Add --debug anywhere to see the traceback behind an error.",
    )
    sub = p.add_subparsers(dest="command", metavar="{run,analyze,extract,refit,report}")
    _add_run_parser(sub)

    from glminterp.cli_analyze import add_parser as add_analyze

    add_analyze(sub)
    _add_extract_parser(sub)
    _add_refit_parser(sub)
    _add_report_parser(sub)
    return p


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    """``glminterp run``: a study end to end."""
    from glminterp.report.studies import DEFAULT_STUDY, STUDIES

    r = sub.add_parser(
        "run", help="run a study end to end and write its report",
        description="Run a study end to end (train, extract, refit, CAM/visualizations, report). "
        "Writes <out>/<study>/: report.html, coefficients.csv, fit.json, provenance.json, "
        "activations.parquet, model.pt, figures/. A failed run leaves an earlier report intact.",
    )
    r.add_argument("study", nargs="?", default=DEFAULT_STUDY, choices=STUDIES,
                   help=f"which study (default {DEFAULT_STUDY})")
    r.add_argument("--out", default="reports", help="parent folder of the report (default reports)")
    r.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of split, init and shuffling (default 0)")
    r.add_argument("--epochs", type=_int_at_least(1), default=None,
                   help="training epochs (default: the study's)")
    r.add_argument("--size", type=_int_at_least(2), default=None,
                   help="rows drawn (stratified) from the data before splitting (default: the study's)")
    r.add_argument("--idx-path", default=None,
                   help="folder with MNIST IDX files (train-images-idx3-ubyte[.gz], ...); needed by mnist_idx")
    r.add_argument("--remedy", default=None, choices=("firth", "ridge", "pca"),
                   help="separation remedy of the refit (default: maximum likelihood; "
                   "mnist_zero_one falls back to firth when the refit rows are separated)")
    r.add_argument("--engine", default=None, choices=("auto", "statsmodels", "fast"),
                   help="maximum-likelihood solver of the refit (default auto)")
    r.add_argument("--quiet", action="store_true", help="no progress bars or messages")


def _add_extract_parser(sub: argparse._SubParsersAction) -> None:
    """``glminterp extract``: activations of a saved model."""
    e = sub.add_parser(
        "extract", help="extract activations from a saved model",
        description="Rebuild a reference architecture from a state dict (torch.load with "
        "weights_only=True), run it over a data set with the seeded train/refit/test split, and "
        "write activations: a .parquet file, or a folder of CSV files for any other --out.",
    )
    e.add_argument("--checkpoint", required=True, help="state dict saved by glminterp (model.pt)")
    e.add_argument("--architecture", default=None,
                   help="mlp, zero_one or gap_cnn (default: the checkpoint's .json sidecar)")
    e.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "digits", "mnist-idx"))
    e.add_argument("--path", default=None, help="IDX folder for --dataset mnist-idx")
    e.add_argument("--out", required=True, help="acts.parquet, or a folder name for CSV output")
    e.add_argument("--layers", nargs="+", default=None,
                   help="module names (default: the head's input layer)")
    e.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="split seed; use the one the model was trained with (default 0)")
    e.add_argument("--quiet", action="store_true")


def _add_refit_parser(sub: argparse._SubParsersAction) -> None:
    """``glminterp refit``: the head as a GLM from saved activations."""
    f = sub.add_parser(
        "refit", help="refit the head from saved activations",
        description="Refit the network's head as a GLM on the refit split of saved activations "
        "and write coefficients.csv, fit.json, figures and report.html into --out.",
    )
    f.add_argument("activations", help="Parquet file written by `glminterp extract`")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--family", default="auto",
                   choices=("auto", "multinomial", "ovr", "binomial", "gaussian"))
    f.add_argument("--parametrization", default="reference", choices=("reference", "sum_to_zero"))
    f.add_argument("--split", default="refit", help="rows to refit on (default refit)")
    f.add_argument("--alpha", type=_alpha, default=0.05,
                   help="level of the confidence intervals and tests, in (0, 1) (default 0.05)")
    f.add_argument("--engine", default="auto", choices=("auto", "statsmodels", "fast"),
                   help="maximum-likelihood solver: statsmodels, the fast exact engine handed "
                   "to statsmodels at the optimum, or auto (fast above 200 parameters)")
    f.add_argument("--remedy", default=None, choices=("firth", "ridge", "pca"),
                   help="fit that exists under separation (firth: binomial / 2-class heads; "
                   "ridge: penalized inference; pca: principal components of the units)")
    f.add_argument("--quiet", action="store_true")


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    """``glminterp report``: re-render a report from saved results."""
    g = sub.add_parser(
        "report", help="re-render report.html from saved results",
        description="Rebuild report.html in a folder from its saved results (report.json, or "
        "coefficients.csv and fit.json as written by `glminterp refit`).",
    )
    g.add_argument("folder")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {low}")
        return value

    parse.__name__ = "integer"
    return parse


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1), e.g. 0.05")
    return value


def _print_top(coefficients, n: int = 3) -> None:
    from glminterp.report.builder import top_units

    print(f"Most significant units per class (top {n} by p-value):")
    for cls, df in top_units(coefficients, n).items():
        units = ", ".join(f"{t} (z={z:+.2f})" for t, z in zip(df["term"], df["z"]))
        print(f"  class {cls}: {units}")


def _cmd_run(args, argv: Sequence[str]) -> int:
    from glminterp.report.studies import run_study

    overrides = {k: v for k, v in (("epochs", args.epochs), ("size", args.size),
                                   ("remedy", args.remedy), ("engine", args.engine))
                 if v is not None}
    t0 = time.perf_counter()
    res = run_study(args.study, args.out, seed=args.seed, progress=not args.quiet,
                    idx_path=args.idx_path, command_line=["glminterp", *argv], **overrides)
    print(f"Done in {time.perf_counter() - t0:.1f} s.")
    for line in res.summary_lines():
        print(line)
    return 0


def _cmd_extract(args) -> int:
    from glminterp.activations import extract_activations
    from glminterp.data import load_dataset, stratified_split
    from glminterp.outputs import check_output_file, check_output_folder
    from glminterp.train import check_input_shape, load_checkpoint, read_checkpoint_sidecar

    out = Path(args.out)
    inputs = [args.checkpoint, Path(args.checkpoint).with_suffix(".json"), args.path]
    (check_output_file if out.suffix == ".parquet" else check_output_folder)(out, inputs=inputs)
    config = {}
    meta = read_checkpoint_sidecar(args.checkpoint) if Path(args.checkpoint).is_file() else None
    if args.architecture is not None and meta is not None:
        # constructor arguments (sizes) still come from the sidecar when the name is given
        if meta.get("architecture") == args.architecture:
            config = meta.get("config", {})
    model = load_checkpoint(args.checkpoint, args.architecture, **config)
    data = load_dataset(args.dataset, path=args.path)
    check_input_shape(args.checkpoint, data.images.shape[1:], warn=False)  # extraction warns
    data = data.with_splits(stratified_split(data.labels, data.ids, seed=args.seed))
    acts = extract_activations(model, data, args.layers, progress=not args.quiet, seed=args.seed)
    written = acts.to_parquet(out) if out.suffix == ".parquet" else acts.to_csv(out)
    print(f"Wrote {len(acts)} rows x {acts.features.shape[1]} units to {written}")
    return 0


def _cmd_refit(args) -> int:
    from glminterp.activations import Activations
    from glminterp.outputs import check_output_folder
    from glminterp.report import builder as rp

    try:
        from glminterp import refit_output_layer
    except ImportError as e:
        print(f"error: the refit is not available in this installation ({e})", file=sys.stderr)
        return 1
    out = check_output_folder(args.out, inputs=[args.activations])  # before the work, not after
    acts = Activations.read_parquet(args.activations)
    t0 = time.perf_counter()
    res = refit_output_layer(acts, split=args.split, family=args.family,
                             parametrization=args.parametrization, alpha=args.alpha,
                             engine=args.engine, remedy=args.remedy, progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    fit = rp.refit_fit_record(res)
    rb = rp.ReportBuilder(f"GLM refit of {Path(args.activations).name}", out.name)
    rb.text("data", f"Activations: {args.activations} ({len(acts)} rows; refit on the "
            f"{args.split!r} split, {res.n_obs} rows).")
    rb.text("model", repr(acts.head))
    rp.add_refit_sections(rb, res.coefficients, fit)
    rb.add_csv(rp.COEF_NAME, res.coefficients)
    if res.remedy is not None:
        print(f"Remedy {res.remedy!r}: {res.inference}")
    rb.add_json(rp.FIT_NAME, fit)
    path = rb.write(out, provenance=rp.provenance(timings={"refit": elapsed},
                                                  extra={"activations": str(args.activations)}),
                    inputs=[args.activations])
    print(f"Report: {path}")
    _print_top(res.coefficients)
    return 0


def _cmd_report(args) -> int:
    from glminterp.report.builder import render_html

    print(f"Report: {render_html(args.folder)}")
    return 0


def _cmd_analyze(args, argv) -> int:
    from glminterp import cli_analyze

    return cli_analyze.main(args, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``glminterp`` command; returns the exit status.

    Every failure becomes one ``error: ...`` line on stderr and exit status 1 (2 for usage
    errors, 130 for Ctrl-C); ``--debug`` anywhere on the line also prints the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    commands = {"run": lambda: _cmd_run(args, argv), "extract": lambda: _cmd_extract(args),
                "refit": lambda: _cmd_refit(args), "report": lambda: _cmd_report(args),
                "analyze": lambda: _cmd_analyze(args, argv)}
    try:
        return commands[args.command]()
    except KeyboardInterrupt:
        print("error: interrupted; an earlier report, if any, was left as it was.", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line, never a traceback
        if debug:
            traceback.print_exc()
        print(f"error: {describe(e)}", file=sys.stderr)
        return 1
