"""Deletion/insertion and average drop / increase: hand-computed curves, torchcam equality."""

from __future__ import annotations

from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from glminterp.maps.cam import class_activation_maps
from glminterp.maps.faithfulness import compare_faithfulness, confidence_change, deletion_insertion
from glminterp.plots.cam import cam_gallery, overlay


class SumNet(nn.Module):
    """logit_1 = sum of pixels, logit_0 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flatten(x))


def test_deletion_insertion_hand_computed():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    sal = np.array([[[0.0, 1.0], [2.0, 3.0]]])  # delete 4, then 3, 2, 1
    di = deletion_insertion(SumNet(), x, sal, [1], steps=4, score="logit")
    np.testing.assert_allclose(di.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(di.deletion[0], [10, 6, 3, 1, 0])
    np.testing.assert_allclose(di.insertion[0], [0, 4, 7, 9, 10])
    np.testing.assert_allclose(di.deletion_auc, [0.25 * (5 + 6 + 3 + 1 + 0)])
    np.testing.assert_allclose(di.insertion_auc, [0.25 * (0 + 4 + 7 + 9 + 5)])
    cc = confidence_change(SumNet(), x, sal, [1], score="logit")
    # E = minmax(sal) * x = (0, 1/3 * 2, 2/3 * 3, 1 * 4) -> O = 20/3 < Y = 10: drop 1/3
    np.testing.assert_allclose(cc.explained, [20 / 3], rtol=1e-6)
    assert cc.drop[0] == pytest.approx((10 - 20 / 3) / 10, rel=1e-6)
    assert not cc.increase[0]


def test_equal_to_torchcam_metrics(gap_cnn_digits, digits):
    from torchcam import methods, metrics  # test-only dependency (pyproject [test])

    x = digits.images[:24]
    with methods.CAM(gap_cnn_digits, "relu3", "fc") as ex:
        with torch.inference_mode():
            pred = gap_cnn_digits(x).argmax(1).tolist()
        tc_maps = ex(class_idx=pred)[0].numpy()
        di_m = metrics.DeletionInsertionMetric(ex, partial(torch.softmax, dim=-1))
        di_m.update(x)
        cc_m = metrics.ClassificationMetric(ex, partial(torch.softmax, dim=-1))
        cc_m.update(x)
    di = deletion_insertion(gap_cnn_digits, x, tc_maps, pred)
    cc = confidence_change(gap_cnn_digits, x, tc_maps, pred)
    theirs = {**di_m.summary(), **cc_m.summary()}
    assert di.summary["deletion_auc"] == pytest.approx(theirs["deletion_auc"], abs=1e-6)
    assert di.summary["insertion_auc"] == pytest.approx(theirs["insertion_auc"], abs=1e-6)
    assert cc.summary["avg_drop"] == pytest.approx(theirs["avg_drop"], abs=1e-6)
    assert cc.summary["conf_increase"] == pytest.approx(theirs["conf_increase"], abs=1e-12)


def test_compare_faithfulness_and_gallery(gap_cnn_digits, digits):
    x = digits.images[:6]
    with torch.inference_mode():
        pred = gap_cnn_digits(x).argmax(1).numpy()
    labels = [str(p) for p in pred]
    net = class_activation_maps(gap_cnn_digits, x)
    p1 = 9
    covs = np.stack([np.eye(p1) * 0.01] * 10)
    glm = class_activation_maps(
        gap_cnn_digits, x, coefficients=(np.asarray(net.coefficients.params), covs), n_sim=200
    )
    maps = {
        "network CAM": net.for_targets(labels),
        "GLM CAM": glm.for_targets(labels),
        "significant-only CAM": glm.significant_only().for_targets(labels),
        "reversed": 1 - net.for_targets(labels),
    }
    tab = compare_faithfulness(gap_cnn_digits, x, maps, pred, steps=8)
    assert list(tab.index) == list(maps) and (tab["n"] == 6).all()
    assert tab.loc["network CAM", "deletion_auc"] == pytest.approx(tab.loc["GLM CAM", "deletion_auc"])
    assert tab.loc["network CAM", "deletion_auc"] != tab.loc["reversed", "deletion_auc"]
    fig = cam_gallery(x, net, glm, labels, rows=[0, 1])
    assert len(fig.axes) == 2 * 6 + 2 * 2  # six panels per row plus SE and z colour bars
    plt.close(fig)
    ax = overlay(x[0], net.maps[0, 0], mask=glm.mask_pointwise[0, 0])
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="upsample"):
        overlay(x[0], net.maps[0, 0, :2, :2])
