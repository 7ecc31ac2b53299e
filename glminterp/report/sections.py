"""Report sections that cross-reference the refit with maps and the classic visualizations.

Each function computes with the package's analysis modules (:mod:`glminterp.maps.cam`,
:mod:`glminterp.saliency`), adds tables and figures to a :class:`~glminterp.report.builder.ReportBuilder`
and stores the result objects in ``StudyResult.extras``. The studies call them through a guard
that turns any failure into a "not available" note, so one visualization never sinks a report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from glminterp.data import LabeledImages
from glminterp.report.builder import ReportBuilder

if TYPE_CHECKING:  # pragma: no cover
    from glminterp.report.studies import StudyResult


def labels_of(images: LabeledImages) -> list[str]:
    """Class name of each image."""
    return [images.classes[i] for i in images.labels.tolist()]


def row_labels(images: LabeledImages) -> list[str]:
    """``"<id>\\nclass <name>"`` per image (row labels of the galleries)."""
    return [f"{sid}\nclass {c}" for sid, c in zip(images.ids.tolist(), labels_of(images))]


def display(images: LabeledImages) -> np.ndarray:
    """Images for display: ``(N, H, W)`` for one channel, ``(N, H, W, 3)`` in [0, 1] for RGB
    (each image min-max scaled, since normalised inputs leave [0, 1])."""
    x = images.images.numpy()
    if x.shape[1] == 1:
        return x[:, 0]
    rgb = np.moveaxis(x[:, :3], 1, -1).astype(float)
    lo = rgb.min(axis=(1, 2, 3), keepdims=True)
    span = rgb.max(axis=(1, 2, 3), keepdims=True) - lo
    return (rgb - lo) / np.where(span > 0, span, 1.0)


_labels, _row_labels, _gray = labels_of, row_labels, display


def cam_gallery(r: StudyResult, rb: ReportBuilder, images: LabeledImages) -> None:
    """Image, network CAM, GLM CAM, SE, z and significance masks for each image's true class.

    Both CAMs use sum-to-zero class contrasts (``w_k - mean_j w_j``), so they are comparable.
    """
    from glminterp.maps.cam import class_activation_maps
    from glminterp.plots import report as plots

    head = r.activations.head
    if head is None or not head.gap:
        rb.note("cam", "Not applicable: the head does not average conv maps (no GAP head).")
        return
    targets = _labels(images)
    alpha = r.config.alpha
    net = class_activation_maps(r.model, images, parametrization="sum_to_zero", alpha=alpha)
    r.extras["cam_network"] = net
    panels = {"CAM (network)": net.for_targets(targets)}
    rb.text("cam", f"Class activation maps of one test image per class, for its true class, "
            f"from the layer {net.layer!r} ({net.parametrization} contrasts: "
            "w_k - mean_j w_j). Maps are min-max normalised for display.")
    if r.refit is None:
        rb.note("cam", f"GLM CAM, SE and z maps not available: {r.refit_error}")
    else:
        glm = class_activation_maps(
            r.model, images, coefficients=r.refit, parametrization="sum_to_zero", alpha=alpha,
            seed=r.seed,
        )
        r.extras["cam"] = glm
        panels["CAM (GLM)"] = glm.for_targets(targets)
        if glm.has_uncertainty:
            panels["SE"] = glm.for_targets(targets, "se")
            panels["z"] = glm.for_targets(targets, "z")
            panels[f"mask pointwise a={alpha:g}"] = glm.for_targets(targets, "mask_pointwise")
            if glm.mask_simultaneous is not None:
                panels["mask simultaneous"] = glm.for_targets(targets, "mask_simultaneous")
            rb.text("cam", "SE: delta-method standard error of the GLM CAM at each location; "
                    "z = CAM / SE; masks: |z| above the pointwise normal quantile, and the "
                    "simultaneous band CAM +- t * band_se excluding 0, with t the max-|z| "
                    "quantile over the feature cells (simulated from N(beta_hat, Sigma), seed "
                    f"{r.seed}) and band_se the interpolated cell SEs (valid at every pixel).")
    rb.figure("cam", plots.cam_gallery(_gray(images), panels, _row_labels(images)), "cam_gallery",
              caption="Rows: test images (true class); columns: the maps of that class.")
    glm = r.extras.get("cam")
    if glm is None:
        return
    summ = glm.summary
    keep = pd.DataFrame({"sample_id": images.ids.tolist(), "class": targets})
    rb.table("cam", summ.merge(keep, on=["sample_id", "class"]),
             caption="GLM CAM per image (true class): range and significant locations")
    xref = glm.cross_reference(top=3).merge(keep, on=["sample_id", "class"])
    rb.table("cam", xref, caption="Channels behind each map: top 3 by share of the positive "
             "mass, with their GLM inference (Holm-corrected)")
    faithfulness_table(r, rb, images, {
        "CAM (network)": net.for_targets(targets),
        "CAM (GLM)": glm.for_targets(targets),
        "CAM (Holm-significant channels only)": glm.significant_only("holm").for_targets(targets),
    })


def faithfulness_table(r: StudyResult, rb: ReportBuilder, images: LabeledImages,
                       maps: dict[str, np.ndarray]) -> None:
    """Deletion / insertion AUC and average drop / increase in confidence of each map."""
    from glminterp.maps.faithfulness import compare_faithfulness

    table = compare_faithfulness(r.model, images, maps, images.labels.numpy())
    r.extras["faithfulness"] = table
    rb.table("cam", table.reset_index(), caption="Faithfulness of the maps on these images "
             "(Petsiuk et al. 2018 deletion/insertion AUC: lower deletion and higher insertion "
             "are better; Chattopadhyay et al. 2018 average drop / increase in confidence, as "
             "fractions, as torchcam computes them)")


def occlusion_panels(r: StudyResult, rb: ReportBuilder, images: LabeledImages) -> None:
    """Zeiler & Fergus occlusion: probability of the true class with a gray square at each place."""
    from glminterp.plots import report as plots
    from glminterp.saliency.occlusion import occlusion

    side = int(images.images.shape[-1])
    window, stride = max(2, side // 5), max(1, side // 14)
    head = r.activations.head
    res = occlusion(r.model, images, window=window, stride=stride,
                    layer=head.input_layer if head is not None else None)
    r.extras["occlusion"] = res
    titles = [f"{sid}: p(class {c})" for sid, c in zip(images.ids.tolist(), _labels(images))]
    rb.figure("classic", plots.image_grid(res.probability, titles, cmap="viridis", centred=False,
                                          suptitle="Occlusion sensitivity"), "occlusion",
              caption=f"Occlusion (Zeiler & Fergus 2014): probability of the true class with a "
              f"{window}x{window} square of the data mean at each position (stride {stride}).")
    rb.table("classic", res.summary.assign(sample_id=images.ids.tolist()),
             caption="Occlusion: most damaging window per image")


def top_patches(r: StudyResult, rb: ReportBuilder) -> None:
    """Top activating test images per head channel, ranked by the refit's z for class 0's contrast."""
    from glminterp.saliency.patches import top_activations

    head = r.activations.head
    if head is None:
        rb.note("classic", "Top patches: no head detected.")
        return
    test = r.data.get_split("test")
    kw = {}
    if r.refit is not None:
        kw = {"refit": r.refit, "cls": r.refit.classes[0], "alpha": r.config.alpha}
    res = top_activations(r.model, test, layer=head.input_layer, k=9, project=False, **kw)
    r.extras["top_patches"] = res
    caption = "Top 9 activating test images per channel of the head's input layer"
    if kw:
        caption += f", with each channel's GLM coefficient for class {kw['cls']}"
    rb.table("classic", res.summary, caption=caption, index=True)


def siddhartha_sets(r: StudyResult, rb: ReportBuilder, images: LabeledImages) -> None:
    """Discriminative / confusing channel sets (Siddhartha 2022) and their GLM variant."""
    from glminterp.plots.saliency import plot_siddhartha
    from glminterp.saliency.siddhartha import siddhartha

    cls = int(images.labels[0])
    test = r.data.get_split("test")
    of_cls = test.subset((test.labels == cls).numpy())
    n_channels = r.activations.head.n_inputs
    res = siddhartha(r.model, of_cls, cls, refit=r.refit, alpha=r.config.alpha,
                     min_size=max(2, n_channels // 4), n_boot=99, seed=r.seed)
    r.extras["siddhartha"] = res
    empty = [name for name, chans in res.sets.items() if len(chans) == 0]
    if empty:
        rb.note("classic", f"Channel sets {', '.join(empty)} are empty for class {cls} (no channel "
                "qualifies), so they are not drawn.")
    rb.figure("classic", plot_siddhartha(res, of_cls.images.numpy(), 0), "siddhartha",
              caption=f"Siddhartha (2022) channel sets for class {cls}: class map restricted "
              "to the most discriminative / most confusing channels, and the GLM variant.")
    rb.table("classic", res.summary, caption=f"Channel sets for class {cls}: size and mean "
             "masked probability (test images of the class)")
    rb.table("classic", res.regression, caption="Asymmetric-Laplace regression of the sorted "
             "weights (R^2 per side)")


def receptive_fields(r: StudyResult, rb: ReportBuilder, images: LabeledImages) -> None:
    """Input-weight images of the top units per class, ranked by the refit's z."""
    from glminterp.plots import report as plots
    from glminterp.saliency.receptive_fields import hidden_unit_fields

    if r.refit is None:
        rb.note("classic", f"Receptive fields ranked by the refit: not available ({r.refit_error}).")
        return
    n = r.config.top_units
    c_in, h, w = (int(v) for v in images.images.shape[1:])
    weights, titles, tables = [], [], []
    by_class = dict(zip(_labels(images), range(len(images))))
    for cls in r.refit.classes:
        img = images.images[by_class[cls]].reshape(c_in * h, w) if cls in by_class else None
        res = hidden_unit_fields(r.model, r.refit, cls, image=img, n=n, alpha=r.config.alpha,
                                 shape=(c_in * h, w))
        r.extras.setdefault("receptive_fields", {})[cls] = res
        units = res.units
        for k in range(len(units)):
            weights.append(res.weights[k])
            titles.append(f"class {cls}: {units['unit'].iloc[k]}")
        tables.append(units.assign(**{"class": cls}))
    if weights:
        rb.figure("classic", plots.image_grid(np.stack(weights), titles, ncol=max(n, 1),
                                              suptitle="Input weights of the top units"),
                  "receptive_fields",
                  caption=f"Hidden units ranked by the refit's z per class (top {n}); each image "
                  "is the unit's input weights (red positive, blue negative).")
        rb.table("classic", pd.concat(tables, ignore_index=True),
                 caption="Units shown, with their GLM inference")


def olden_garson(r: StudyResult, rb: ReportBuilder) -> None:
    """Olden and Garson pixel importance next to the GLM-based pixel effect, for one class."""
    from glminterp.plots import report as plots
    from glminterp.saliency.receptive_fields import input_importance

    c_in, h, w = (int(v) for v in r.data.images.shape[1:])
    cls = r.refit.classes[-1] if r.refit is not None else r.data.classes[-1]
    tab = input_importance(r.model, r.refit, cls, shape=(c_in * h, w), alpha=r.config.alpha)
    r.extras["olden_garson"] = tab
    cols = [c for c in ("olden", "garson", "glm_z") if c in tab.columns]
    imgs = np.stack([tab[c].to_numpy(dtype=float).reshape(c_in * h, w) for c in cols])
    rb.figure("classic", plots.image_grid(imgs, [f"{c} (class {cls})" for c in cols],
                                          ncol=len(cols), suptitle="Pixel importance"),
              "olden_garson",
              caption="Olden's connection weights, Garson's relative importance, and the GLM "
              "effect's z, per input pixel.")
    if len(cols) > 1:
        rb.table("classic", tab[cols].corr(method="spearman"), index=True,
                 caption="Spearman correlation between the pixel rankings")


def channel_for_class(r: StudyResult, cls: str, units: list[str]) -> tuple[int, str]:
    """Head channel with the largest GLM z for ``cls`` (sum-to-zero), else the largest weight."""
    head = r.activations.head
    if r.refit is not None and r.refit.family == "multinomial":
        b = r.refit.params("sum_to_zero")
        se = np.sqrt(np.diag(r.refit.class_cov(cls, "sum_to_zero").to_numpy()))
        z = (b[cls].to_numpy() / se)[1:]
        term = str(b.index[1 + int(np.argmax(z))])
        return units.index(term), f"largest GLM z ({z.max():+.2f})"
    w = head.coef_matrix()[1:, list(head.classes).index(cls)]
    return int(np.argmax(w)), "largest network weight"


def deconvnet_projections(r: StudyResult, rb: ReportBuilder, images: LabeledImages) -> None:
    """Deconvnet projection (Zeiler & Fergus 2014) of each image's most significant channel.

    For each test image the channel of the head's input layer with the largest GLM z for the
    image's true class (sum-to-zero contrast) is projected back to pixel space.
    """
    from glminterp.plots import report as plots
    from glminterp.saliency.deconvnet import deconvnet

    head = r.activations.head
    if head is None or not head.gap:
        rb.note("classic", "Deconvnet projections: not applicable (no GAP head over conv maps).")
        return
    units = [str(c) for c in r.activations.head_features().columns]  # channel order
    picks = [channel_for_class(r, c, units) for c in _labels(images)]
    channels = [c for c, _ in picks]
    proj = deconvnet(r.model, images, layer=head.input_layer, channel=channels)
    r.extras["deconvnet"] = {"channels": channels, "projections": proj}
    titles = [f"{sid}: ch {ch}" for sid, ch in zip(images.ids.tolist(), channels)]
    rb.figure("classic", plots.image_grid(proj[:, 0], titles, suptitle="Deconvnet projections"),
              "deconvnet",
              caption="Deconvnet projection (Zeiler & Fergus 2014) of the whole feature map of "
              f"layer {head.input_layer!r} chosen per image: the channel with the "
              f"{picks[0][1].split(' (')[0]} for the image's true class.")
    rb.table("classic", pd.DataFrame({"sample_id": images.ids.tolist(), "class": _labels(images),
                                      "channel": channels,
                                      "chosen by": [why for _, why in picks]}),
             caption="Channels projected")


def zero_one_panel(r: StudyResult, rb: ReportBuilder) -> None:
    """The 784 -> 1 -> 2 network: its unit's input-weight image and the head's refit."""
    from glminterp.plots import report as plots
    from glminterp.saliency.receptive_fields import zero_one_analysis

    if r.refit is None:
        rb.note("classic", f"Zero-one analysis: not available ({r.refit_error}).")
        return
    c_in, h, w = (int(v) for v in r.data.images.shape[1:])
    res = zero_one_analysis(r.model, r.activations, r.refit, shape=(c_in * h, w))
    r.extras["zero_one"] = res
    rb.figure("classic", plots.image_grid(res.weight_image[None], ["input weights of the unit"],
                                          ncol=1), "zero_one_weights",
              caption="Input weights of the single hidden unit (red positive, blue negative).")
    rb.items("classic", {
        "rows": res.n_obs, "deviance (refit)": res.deviance,
        "null deviance": res.null_deviance, "deviance of the network's head": res.network_deviance,
        "LR statistic (1 df)": res.lr_statistic, "LR p-value": res.lr_pvalue,
        "inference": r.refit.inference,
    }, caption="Zero-one head on the refit rows (deviances are -2 log L, unpenalized)")
    rb.table("classic", res.coefficients, caption="The head's refit (class 1 against class 0)")
