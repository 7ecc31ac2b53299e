"""``glminterp analyze``: the whole analysis of one's own trained network from the command line.

::

    glminterp analyze --model mypkg.nets:build --checkpoint net.pt --images data/ --out reports/mine
    glminterp analyze --model nets.py:Net --model-args '{"n_classes": 3}' --checkpoint net.pt \\
        --npz data.npz --all-refit
    glminterp analyze --activations acts.parquet --out reports/acts

The model is built by the factory ``--model`` names (a ``package.module:callable`` or a
``path/to/file.py:callable``) and loaded from the state dict ``--checkpoint``
(``torch.load(weights_only=True)``). A checkpoint written by ``glminterp`` for one of its own
architectures needs no ``--model`` (its ``.json`` sidecar names it). Nothing is retrained.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path


class UsageError(ValueError):
    """A command-line mistake; the message names the flag and the fix."""


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to ``glminterp``'s subparsers."""
    from glminterp.analysis import STEPS

    a = sub.add_parser(
        "analyze", help="analyse your own trained network: extract, refit, maps, report",
        description="Run the whole analysis of a trained network (nothing is retrained): "
        "extract the head's inputs, refit the head as a GLM with the estimator the data need, "
        "draw the maps that apply to the architecture and write <out>/report.html.",
    )
    m = a.add_argument_group("model")
    m.add_argument("--model", metavar="MODULE:FACTORY",
                   help="package.module:factory or path/to/file.py:factory returning the "
                   "nn.Module (needed unless the checkpoint is one of glminterp's own)")
    m.add_argument("--model-args", metavar="JSON", default="{}",
                   help='keyword arguments of the factory as JSON, e.g. \'{"n_classes": 3}\'')
    m.add_argument("--checkpoint", metavar="STATE_DICT.pt",
                   help="the trained weights: a state dict saved with torch.save(model."
                   "state_dict()), read with weights_only=True")
    d = a.add_argument_group("data (one of)")
    d.add_argument("--images", metavar="FOLDER",
                   help="one subfolder per class of PNG/JPEG images (class names = folder names)")
    d.add_argument("--npz", metavar="FILE", help=".npz with x (images) and y (labels) arrays")
    d.add_argument("--idx", metavar="FILE_OR_FOLDER",
                   help="IDX images file (labels file found beside it) or a folder of MNIST files")
    d.add_argument("--activations", metavar="PARQUET",
                   help="saved activations (glminterp extract): refit and report only")
    o = a.add_argument_group("options")
    o.add_argument("--classes", metavar="A,B,...", help="class names (default: from the data)")
    o.add_argument("--image-size", metavar="H[,W]", help="resize --images to this size")
    o.add_argument("--normalize", metavar="per_channel|MEAN/STD,...",
                   help="normalise --images: per_channel (data statistics) or the network's "
                   "training values, e.g. 0.485/0.229,0.456/0.224,0.406/0.225")
    o.add_argument("--splits", metavar="CSV", help="split file with columns sample_id, split")
    o.add_argument("--all-refit", action="store_true",
                   help="every row is a held-out refit row (the network was trained elsewhere)")
    o.add_argument("--sections", metavar="STEP,...",
                   help=f"maps to draw (default: all that apply): {', '.join(STEPS)}")
    o.add_argument("--show-images", type=int, default=4, metavar="N",
                   help="images in the per-image maps (one per class; default 4)")
    o.add_argument("--remedy", default="auto", choices=("auto", "mle", "firth", "ridge", "pca"),
                   help="estimator: auto (MLE, or a remedy when the rows are separated; "
                   "default), mle (fail when separated), or a remedy")
    o.add_argument("--engine", default="auto", choices=("auto", "statsmodels", "fast"))
    o.add_argument("--alpha", type=float, default=0.05)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--out", default=None, help="report folder (default reports/<name>)")
    o.add_argument("--name", default=None, help="analysis name (default: the model's name)")
    o.add_argument("--title", default=None)
    o.add_argument("--quiet", action="store_true")
    return a


def load_factory(spec: str):
    """The callable ``--model`` names: ``package.module:factory`` or ``file.py:factory``."""
    if ":" not in spec:
        raise UsageError(f"--model {spec!r}: use package.module:factory or path/to/file.py:factory.")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"--model: file not found: {path}")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules.setdefault(path.stem, module)
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise UsageError(f"--model: cannot import {where!r} ({e}); is it on PYTHONPATH?") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"--model: {where} has no callable {name!r}.")
    return factory


def build_model(args):
    """The model of ``--model`` / ``--checkpoint`` with its weights loaded (eval mode)."""
    import torch

    from glminterp.models import ARCHITECTURES

    if args.model is None:
        if args.checkpoint is None:
            raise UsageError("--model (and --checkpoint) are needed: the network to analyse.")
        side = Path(args.checkpoint).with_suffix(".json")
        meta = json.loads(side.read_text()) if side.is_file() else {}
        if meta.get("architecture") not in ARCHITECTURES:
            raise UsageError(f"--model is needed: {args.checkpoint} is not one of glminterp's own "
                             f"architectures ({', '.join(ARCHITECTURES)}); name the factory that "
                             "builds it, e.g. --model mypkg.nets:build or --model nets.py:Net.")
        from glminterp.train import load_checkpoint

        return load_checkpoint(args.checkpoint), meta["architecture"], meta.get("config", {})
    try:
        kwargs = json.loads(args.model_args)
    except json.JSONDecodeError as e:
        raise UsageError(f"--model-args is not valid JSON ({e}).") from e
    if not isinstance(kwargs, dict):
        raise UsageError("--model-args must be a JSON object of keyword arguments.")
    model = load_factory(args.model)(**kwargs)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model {args.model} returned {type(model).__name__}, not an nn.Module.")
    if args.checkpoint is None:
        raise UsageError("--checkpoint is needed: the trained weights (nothing is retrained).")
    path = Path(args.checkpoint)
    if not path.is_file():
        raise UsageError(f"--checkpoint: file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UsageError(f"--checkpoint {path.name} does not fit the --model network: {e}") from e
    model.eval()
    name = args.model.rsplit(":", 1)[1]
    return model, name, kwargs


def _size(text: str | None):
    if text is None:
        return None
    parts = [int(v) for v in text.split(",")]
    return (parts[0], parts[-1])


def _normalize(text: str | None):
    if text is None or text == "per_channel":
        return text
    try:
        pairs = [p.split("/") for p in text.split(",")]
        return [float(m) for m, _ in pairs], [float(s) for _, s in pairs]
    except ValueError as e:
        raise UsageError(f"--normalize {text!r}: use per_channel or MEAN/STD per channel, "
                         "comma-separated.") from e


def load_data(args):
    """The data of ``--images`` / ``--npz`` / ``--idx`` (exactly one)."""
    from glminterp import inputs

    given = [f for f in ("images", "npz", "idx") if getattr(args, f)]
    if len(given) != 1:
        raise UsageError("give exactly one of --images FOLDER, --npz FILE, --idx FILE "
                         f"(or --activations PARQUET); got {len(given)}.")
    classes = args.classes.split(",") if args.classes else None
    if args.images:
        ds = inputs.load_image_folder(args.images, size=_size(args.image_size),
                                      normalize=_normalize(args.normalize))
        return ds if classes is None else inputs.as_labeled_images(ds, classes=classes)
    if args.npz:
        return inputs.load_npz(args.npz, classes=classes)
    return inputs.load_idx(args.idx, classes=classes)


def _plan(args):
    from glminterp.analysis import Plan

    sections = tuple(s.strip() for s in args.sections.split(",")) if args.sections else None
    try:
        return Plan(sections=sections, images=args.show_images, alpha=args.alpha,
                    remedy=None if args.remedy == "mle" else args.remedy, engine=args.engine)
    except ValueError as e:
        raise UsageError(f"--sections / --alpha: {e}") from e


def run(args, argv: Sequence[str]) -> int:
    """Run ``glminterp analyze``; returns the exit status (errors name the flag)."""
    command_line = ["glminterp", *argv]
    if args.splits and args.all_refit:
        raise UsageError("give --splits or --all-refit, not both.")
    if args.activations:
        from glminterp.report.analysis import write_activations_report

        out = Path(args.out or f"reports/{Path(args.activations).stem}")
        path = write_activations_report(args.activations, out, plan=_plan(args),
                                        progress=not args.quiet, command_line=command_line)
        print(f"Report: {path}")
        return 0
    from glminterp.analysis import Analysis

    model, name, kwargs = build_model(args)
    data = load_data(args)
    splits = "refit" if args.all_refit else args.splits
    analysis = Analysis(model, data, splits=splits, plan=_plan(args), seed=args.seed,
                        name=args.name or name, title=args.title, architecture=name,
                        model_kwargs=kwargs, progress=not args.quiet)
    path = analysis.run().write_report(Path(args.out or f"reports/{analysis.name}"),
                                       command_line=command_line)
    for line in analysis.summary_lines():
        print(line)
    return 0 if path.is_file() else 1


def main(args, argv: Sequence[str]) -> int:
    """Entry point from :func:`glminterp.cli.main`: usage errors print ``error: ...``, exit 2."""
    try:
        return run(args, argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
