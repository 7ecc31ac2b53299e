"""Head detection and the parametrizations of a softmax head."""

import numpy as np
import pytest
import torch
from torch import nn

import glminterp as gi
from glminterp.head import (
    HeadError,
    detect_head,
    reference_to_full,
    reference_to_sum_to_zero_map,
    to_reference,
    to_sum_to_zero,
    vec_map,
)


def test_detects_mlp_and_gap_heads(mlp_digits, gap_cnn_digits, digits):
    x = digits.images[:3]
    h = detect_head(mlp_digits, x)
    assert (h.name, h.link, h.input_layer, h.gap) == ("out", "softmax", "act1", False)
    assert h.link_source == "model attribute glminterp_link"
    np.testing.assert_array_equal(h.weight, mlp_digits.out.weight.detach().double().numpy())
    g = detect_head(gap_cnn_digits, x)
    assert (g.name, g.input_layer, g.gap, g.n_inputs, g.n_outputs) == ("fc", "relu3", True, 8, 10)


def test_link_from_modules_and_conventions():
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    sig = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 4), nn.Sigmoid())
    h = detect_head(sig, x)
    assert (h.name, h.link, h.input_layer) == ("2", "sigmoid", "1")
    assert "Sigmoid" in h.link_source
    logits = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 4))
    assert detect_head(logits, x).link == "softmax"
    assert "CrossEntropyLoss" in detect_head(logits, x).link_source
    one = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 1))
    assert detect_head(one, x).link == "sigmoid"
    assert detect_head(logits, x, link="identity").link == "identity"


def test_head_errors():
    x = torch.randn(4, 5)
    with pytest.raises(HeadError, match="runs after the candidate head"):
        detect_head(nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2), nn.ReLU()), x)
    with pytest.raises(HeadError, match="No nn.Linear"):
        detect_head(nn.Sequential(nn.ReLU()), x)
    with pytest.raises(HeadError, match="not an nn.Linear"):
        detect_head(nn.Sequential(nn.Linear(5, 3), nn.ReLU()), x, head="1")
    with pytest.raises(KeyError, match="head: 'fc' is not a module"):
        detect_head(nn.Sequential(nn.Linear(5, 3)), x, head="fc")

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(5, 3)
            self.out = nn.Linear(3, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.fc1(x)))

    with pytest.raises(HeadError, match="functional op"):
        detect_head(Functional(), x)


def test_reference_and_sum_to_zero_by_hand():
    w = np.array([[1.0, 2.0, 6.0], [0.0, -3.0, 3.0]])  # (p+1=2, K=3)
    np.testing.assert_array_equal(to_reference(w), [[1.0, 5.0], [-3.0, 3.0]])
    np.testing.assert_array_equal(to_sum_to_zero(w), [[-2.0, -1.0, 3.0], [0.0, -3.0, 3.0]])
    beta = to_reference(w)
    c = reference_to_sum_to_zero_map(3)
    np.testing.assert_allclose(beta @ c.T, to_sum_to_zero(w), atol=1e-14)
    np.testing.assert_allclose(to_sum_to_zero(reference_to_full(beta)), to_sum_to_zero(w), atol=1e-14)
    # vectorised (Fortran order) version of the same linear map
    np.testing.assert_allclose(vec_map(c, 2) @ beta.ravel(order="F"), (beta @ c.T).ravel(order="F"), atol=1e-14)


def test_head_params_are_shift_invariant(mlp_digits, digits):
    h = detect_head(mlp_digits, digits.images[:2])
    shifted = gi.Head(**{**h.__dict__, "weight": h.weight + 0.7, "bias": h.bias - 2.0})
    for par in ("reference", "sum_to_zero"):
        np.testing.assert_allclose(h.params(par), shifted.params(par), atol=1e-12)
    with pytest.raises(ValueError, match="parametrization"):
        h.params("treatment")
    assert gi.Head.from_dict(h.to_dict()).params("reference").tolist() == h.params("reference").tolist()


def test_head_input_through_flatten_glue():
    torch.manual_seed(0)
    x = torch.randn(6, 1, 4, 4)
    logistic = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    h = detect_head(logistic, x)
    assert (h.input_layer, h.gap, h.n_inputs) == ("0", False, 16)
    acts = gi.extract_activations(logistic, x, progress=False)
    np.testing.assert_allclose(acts.head_features().to_numpy(), x.reshape(6, -1).numpy())
    # conv maps flattened into the head (no GAP): the regressors are the flattened cells
    flat_cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    h2 = detect_head(flat_cnn, x)
    assert (h2.input_layer, h2.gap) == ("2", False)
    acts2 = gi.extract_activations(flat_cnn, x, progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(
            acts2.head_features().to_numpy(), flat_cnn[:3](x).numpy(), rtol=1e-6, atol=1e-7
        )
    with pytest.raises(HeadError, match="raw input"):
        detect_head(nn.Sequential(nn.Linear(5, 3)), torch.randn(4, 5))
