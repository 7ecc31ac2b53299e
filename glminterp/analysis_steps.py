"""The visualization steps of an :class:`~glminterp.analysis.Analysis`, one function each.

Each runner ``fn(analysis, images)`` computes with the package's analysis modules, stores its
result objects in ``analysis.extras`` and adds tables and figures to the analysis's report
builder (``analysis.builder``). :data:`RUNNERS` maps step names to runners.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from torch import nn

from glminterp.data import LabeledImages
from glminterp.report import sections as xref


def _last_conv(model: nn.Module) -> str:
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]


def _feature_layer(a) -> str:
    """The conv layer the patch and deconvnet steps read: the GAP head's input, else the last
    Conv2d (its ReLU, when one directly follows it, is where the paper reads activations)."""
    head = a.activations.head
    if head is not None and head.gap:
        return head.input_layer
    return _last_conv(a.model)


def _pool(a, limit: int = 500) -> LabeledImages:
    """Images the top-activation search runs over: the image split, at most ``limit`` rows."""
    split = a.plan.image_split or ("test" if "test" in set(a.data.split) else "refit")
    pool = a.data.get_split(split)
    return pool if len(pool) <= limit else pool.subset(np.arange(limit))


def gradcam(a, images: LabeledImages) -> None:
    """Grad-CAM (Selvaraju et al. 2017) of each image's true class at the last conv layer."""
    from glminterp.maps.cam import class_activation_maps
    from glminterp.plots import report as plots

    layer = _last_conv(a.model)
    res = class_activation_maps(a.model, images, method="gradcam", layer=layer)
    a.extras["gradcam"] = res
    targets = xref.labels_of(images)
    classes = [c if c in res.classes else res.classes[0] for c in targets]
    rb = a.builder
    rb.figure("cam", plots.cam_gallery(xref.display(images), {"Grad-CAM": res.for_targets(classes)},
                                       xref.row_labels(images)), "gradcam",
              caption=f"Grad-CAM of each image's true class at layer {layer!r} (the head is not "
              "a GAP head, so the exact CAM and its GLM standard errors do not exist; Grad-CAM "
              "weights the maps by the gradient of the class score).")


def patches(a, images: LabeledImages) -> None:
    """Top-k activating patches per channel with their deconvnet projections (Z&F Fig. 2)."""
    from glminterp.plots import analysis as aplots
    from glminterp.saliency.patches import top_activations

    layer = _feature_layer(a)
    pool = _pool(a)
    head = a.activations.head
    k = min(a.plan.top_k, len(pool))
    kw, chosen_by = {}, "largest top activation"
    if head.gap and a.refit is not None:
        units = [str(c) for c in a.activations.head_features().columns]
        picks = [xref.channel_for_class(a, c, units) for c in a.refit.classes]
        channels = list(dict.fromkeys(ch for ch, _ in picks))[: a.plan.patch_channels]
        kw = {"refit": a.refit, "cls": a.refit.classes[0], "alpha": a.plan.alpha}
        chosen_by = "largest GLM z for a class (one channel per class, in class order)"
    else:
        scan = top_activations(a.model, pool, layer=layer, k=1, project=False)
        top = scan.table.sort_values("activation", ascending=False, kind="stable")
        channels = top["channel"].astype(int).tolist()[: a.plan.patch_channels]
    res = top_activations(a.model, pool, layer=layer, k=k, channels=channels, project=True, **kw)
    a.extras["top_patches"] = res
    titles = [f"channel {c}" for c in res.channels]
    a.builder.figure("classic", aplots.patch_grid(res.patches, res.projections, titles),
                     "top_patches",
                     caption=f"Top {k} activating patches of {len(res.channels)} channels of layer "
                     f"{layer!r} over {len(pool)} images (left: the input patch under the unit's "
                     "receptive field; right: its deconvnet projection, Zeiler & Fergus 2014 "
                     f"Fig. 2). Channels chosen by {chosen_by}.")
    a.builder.table("classic", res.summary.reset_index(), caption="Channels shown: top and "
                    f"{k}-th activation" + (f", GLM inference for class {kw['cls']}" if kw else ""))


def deconvnet(a, images: LabeledImages) -> None:
    """Deconvnet projection of the whole feature map chosen for each image."""
    head = a.activations.head
    if head.gap:
        xref.deconvnet_projections(a, a.builder, images)
        return
    from glminterp.plots import report as plots
    from glminterp.saliency.deconvnet import deconvnet as project
    from glminterp.saliency.patches import top_activations

    layer = _last_conv(a.model)
    scan = top_activations(a.model, images, layer=layer, k=1, project=False)
    best = scan.table.loc[scan.table.groupby("index")["activation"].idxmax()]
    channels = best.set_index("index").reindex(range(len(images)))["channel"].astype(int).tolist()
    proj = project(a.model, images, layer=layer, channel=channels)
    a.extras["deconvnet"] = {"channels": channels, "projections": proj}
    titles = [f"{sid}: ch {ch}" for sid, ch in zip(images.ids.tolist(), channels)]
    a.builder.figure("classic", plots.image_grid(proj.sum(axis=1), titles,
                                                 suptitle="Deconvnet projections"), "deconvnet",
                     caption=f"Deconvnet projection (Zeiler & Fergus 2014) of the map of layer "
                     f"{layer!r} that each image activates most (summed over input channels).")


def _wrap(fn: Callable) -> Callable:
    return lambda a, images: fn(a, a.builder, images)


RUNNERS: dict[str, Callable] = {
    "cam": _wrap(xref.cam_gallery),
    "gradcam": gradcam,
    "occlusion": _wrap(xref.occlusion_panels),
    "siddhartha": _wrap(xref.siddhartha_sets),
    "patches": patches,
    "deconvnet": deconvnet,
    "receptive_fields": _wrap(xref.receptive_fields),
    "olden_garson": lambda a, images: xref.olden_garson(a, a.builder),
    "zero_one": lambda a, images: xref.zero_one_panel(a, a.builder),
}


def step_table(sections_run: dict[str, str]) -> pd.DataFrame:
    """One row per step: what ran, what does not apply and why."""
    return pd.DataFrame({"step": list(sections_run), "status": list(sections_run.values())})
