"""Hostile inputs to the Python API: each is refused with a clear error naming the argument.

Outcome groups (for the issue's closing note): ``test_refused_*`` raise the asserted type with
the argument named; ``test_warns_*`` warn; ``test_correct_*`` were silently wrong before.
"""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from _hostile_support import DictNet, TinyNet, TupleNet, tiny_x

import glminterp as gi
from glminterp._validate import check_bool, check_choice, check_int, check_real
from glminterp.head import HeadError
from glminterp.maps.cam import _select_classes
from glminterp.train import check_input_shape, load_checkpoint

# ---------------------------------------------------------------------------- validators
INT_CASES = [
    (2.5, TypeError, "must be an integer"), ("3", TypeError, "must be an integer"),
    (True, TypeError, "must be an integer"), (None, TypeError, "must be an integer"),
    (np.float64(2.0), TypeError, "must be an integer"), (0, ValueError, ">= 1"),
    (-4, ValueError, ">= 1"), (10**6, ValueError, "<= 1000"),
]


@pytest.mark.parametrize(("value", "exc", "text"), INT_CASES, ids=[repr(c[0]) for c in INT_CASES])
def test_refused_check_int(value, exc, text):
    with pytest.raises(exc, match=text) as e:
        check_int("n_boot", value, minimum=1, maximum=1000)
    assert "n_boot" in str(e.value)


REAL_CASES = [
    ("0.05", TypeError, "must be a number"), (None, TypeError, "must be a number"),
    (False, TypeError, "must be a number"), (math.nan, ValueError, "finite"),
    (math.inf, ValueError, "finite"), (0.0, ValueError, "> 0"), (1.0, ValueError, "< 1"),
    (-0.5, ValueError, "> 0"), ([0.05], TypeError, "must be a number"),
]


@pytest.mark.parametrize(("value", "exc", "text"), REAL_CASES, ids=[repr(c[0]) for c in REAL_CASES])
def test_refused_check_real(value, exc, text):
    with pytest.raises(exc, match=text) as e:
        check_real("alpha", value, minimum=0, maximum=1, open_min=True, open_max=True)
    assert "alpha" in str(e.value)


@pytest.mark.parametrize("value", [0, 1, "yes", None, "False"])
def test_refused_check_bool(value):
    with pytest.raises(TypeError, match="progress must be True or False"):
        check_bool("progress", value)


@pytest.mark.parametrize("value", ["sum", None, ["avg"], 3])
def test_refused_check_choice(value):
    with pytest.raises(ValueError, match=r"pool=.* is not known; use one of \('avg', 'max'\)"):
        check_choice("pool", value, ("avg", "max"))


def test_correct_validators_return_canonical_types():
    assert check_int("n", np.int64(3), minimum=1) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_real("a", np.float32(0.25), minimum=0) == 0.25
    assert check_bool("b", np.bool_(True)) is True
    assert check_choice("c", "avg", ("avg", "max")) == "avg"


# ---------------------------------------------------------------------------- extraction
def _xyid(n: int = 12):
    return tiny_x(n), torch.arange(n) % 2, [f"s{i:02d}" for i in range(n)]


EXTRACT_OPTIONS = [
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    ({"batch_size": "4"}, TypeError, "batch_size must be an integer"),
    ({"batch_size": True}, TypeError, "batch_size must be an integer"),
    ({"batch_size": None}, TypeError, "batch_size must be an integer"),
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ({"batch_size": -3}, ValueError, "batch_size must be >= 1"),
    ({"keep_maps": "yes"}, TypeError, "keep_maps must be True or False"),
    ({"keep_maps": 1}, TypeError, "keep_maps must be True or False"),
    ({"progress": "no"}, TypeError, "progress must be True or False"),
    ({"pool": "sum"}, ValueError, "pool='sum'"),
    ({"layers": ["nope"]}, KeyError, "nope"),
    ({"link": "tanh"}, ValueError, "link='tanh'"),
]


@pytest.mark.parametrize(("kwargs", "exc", "text"), EXTRACT_OPTIONS,
                         ids=[f"{next(iter(k))}={next(iter(k.values()))!r}" for k, _, _ in EXTRACT_OPTIONS])
def test_refused_extract_option(kwargs, exc, text):
    kw = {"progress": False, **kwargs}
    with pytest.raises(exc, match=text):
        gi.extract_activations(TinyNet(), _xyid(), **kw)


def _with(position: int, value, n: int = 12):
    x, y, ids = _xyid(n)
    ids = list(ids)
    ids[position] = value
    return x, y, ids


BAD_DATA = [
    ("none_id_first", lambda: _with(0, None), ValueError, r"None/NaN \(positions \[0\]\)"),
    ("none_id_later", lambda: _with(7, None), ValueError, r"None/NaN \(positions \[7\]\)"),
    ("nan_id", lambda: _with(3, float("nan")), ValueError, r"None/NaN \(positions \[3\]\)"),
    ("duplicate_ids", lambda: _with(5, "s00"), ValueError, "sample ids are not unique"),
    ("ids_too_few", lambda: (tiny_x(12), torch.arange(12) % 2, ["a"] * 3), ValueError, "12 inputs but 3 ids"),
    ("labels_too_few", lambda: (tiny_x(12), torch.arange(3), None), ValueError, "12 inputs but 3 labels"),
    ("string_labels", lambda: (tiny_x(4), ["cat", "dog", "cat", "dog"]), TypeError, "labels must be integer"),
    ("float_labels", lambda: (tiny_x(4), torch.tensor([0.7, 1.7, 0.7, 1.7])), ValueError,
     r"4 are not integral \(e.g. 0.7"),
    ("nan_labels", lambda: (tiny_x(4), torch.tensor([0.0, math.nan, 1.0, 0.0])), ValueError,
     "labels hold NaN or inf"),
    ("bool_labels", lambda: (tiny_x(4), torch.tensor([True, False, True, False])), TypeError,
     "labels must be integer class indices, got dtype torch.bool"),
    ("empty", lambda: (tiny_x(12)[:0], None, None), ValueError, "data is empty"),
    ("not_data", lambda: {"x": tiny_x(3)}, TypeError, "data must be a Tensor"),
    ("numpy_array", lambda: tiny_x(3).numpy(), TypeError, "data must be a Tensor"),
]


@pytest.mark.parametrize(("make", "exc", "text"), [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_refused_extract_data(make, exc, text):
    with pytest.raises(exc, match=text):
        gi.extract_activations(TinyNet(), make(), progress=False, batch_size=4)


@pytest.mark.parametrize("row", [0, 1, 7, 11])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_refused_nonfinite_inputs_named_by_id(row, value):
    x, y, ids = _xyid()
    x[row, 2] = value
    with pytest.raises(ValueError, match="NaN or inf") as e:
        gi.extract_activations(TinyNet(), (x, y, ids), progress=False, batch_size=4)
    assert f"'s{row:02d}'" in str(e.value)


def test_refused_nonfinite_inputs_without_ids_name_row_numbers():
    x = tiny_x()
    x[9, 0] = math.nan
    with pytest.raises(ValueError, match=r"sample ids \['9'\]"):
        gi.extract_activations(TinyNet(), x, progress=False, batch_size=4)


def test_refused_overflowing_activations_name_units_and_ids():
    x, y, ids = _xyid()
    net = TinyNet(scale=100.0)
    x[4] = 3e37 * torch.sign(net.fc1.weight[0].detach())  # finite input; unit 0 overflows to inf
    with pytest.raises(ValueError, match="activations are NaN or inf") as e:
        gi.extract_activations(net, (x, y, ids), progress=False)
    assert "'s04'" in str(e.value) and "act:" in str(e.value)


@pytest.mark.parametrize("net", [TupleNet, DictNet], ids=["tuple", "dict"])
def test_refused_model_not_returning_a_tensor(net):
    with pytest.raises(TypeError, match=r"model: \w+Net.forward returned a (tuple of 2|dict of 1)"):
        gi.extract_activations(net(), _xyid(), progress=False, layers=["act"])


def test_correct_dataloader_tensor_ids_are_their_values():
    x, y, _ = _xyid()
    ds = torch.utils.data.TensorDataset(x, y, torch.arange(100, 112))
    acts = gi.extract_activations(TinyNet(), torch.utils.data.DataLoader(ds, batch_size=5),
                                  progress=False)
    assert list(acts.features.index[:2]) == ["100", "101"]  # not "tensor(100)"


# ---------------------------------------------------------------------------- sigmoid labels
def test_correct_one_logit_sigmoid_with_two_class_names_is_labelled_positive():
    x = tiny_x(8)
    y = torch.arange(8) % 2
    acts = gi.extract_activations(TinyNet(k=1), (x, y), progress=False, classes=["neg", "pos"])
    assert acts.head.classes == ("pos",)
    assert acts.prob_columns == ["prob:pos"]  # P(label = 1), not "prob:0"
    logit = TinyNet(k=1)(x).detach().numpy()[:, 0]
    np.testing.assert_allclose(acts.obs["prob:pos"], 1 / (1 + np.exp(-logit)), rtol=1e-6)


def test_refused_sigmoid_head_with_three_class_names():
    with pytest.raises(HeadError, match="classes has 3 labels but head 'fc' has 1 outputs"):
        gi.extract_activations(TinyNet(k=1), tiny_x(4), progress=False, head="fc",
                               classes=["a", "b", "c"])


# ---------------------------------------------------------------------------- CAM classes=
CAM_CLASSES = [
    ([42], ValueError, "index 42 is out of range for 3 outputs"),
    (42, ValueError, "index 42 is out of range"),
    ([-1], ValueError, "index -1 is out of range"),
    (["zz"], ValueError, "'zz' has no map"),
    ([True], TypeError, "neither a class label"),
    ([1.5], TypeError, "neither a class label"),
    ([None], TypeError, "neither a class label"),
]


@pytest.mark.parametrize(("classes", "exc", "text"), CAM_CLASSES, ids=[repr(c[0]) for c in CAM_CLASSES])
def test_refused_cam_classes(classes, exc, text):
    with pytest.raises(exc, match=text) as e:
        _select_classes(classes, ("0", "1", "2"), ("0", "1", "2"))
    assert "classes" in str(e.value)


def test_refused_cam_classes_through_the_public_call():
    model = gi.build_model("gap_cnn", seed=0, widths=(2, 2, 3), n_classes=3)
    with pytest.raises(ValueError, match="classes: index 42 is out of range"):
        gi.class_activation_maps(model, torch.zeros(2, 1, 8, 8), classes=[42])


CAM_OPTIONS = [
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ({"n_sim": "x"}, TypeError, "n_sim must be an integer"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"alpha": "0.05"}, TypeError, "alpha must be a number"),
    ({"alpha": 1.0}, ValueError, "alpha must be < 1"),
]


@pytest.mark.parametrize(("kwargs", "exc", "text"), CAM_OPTIONS,
                         ids=[next(iter(c[0])) + "=" + repr(next(iter(c[0].values())))
                              for c in CAM_OPTIONS])
def test_refused_cam_options(kwargs, exc, text):
    model = gi.build_model("gap_cnn", seed=0, widths=(2, 2, 3), n_classes=3)
    with pytest.raises(exc, match=text):
        gi.class_activation_maps(model, torch.zeros(2, 1, 8, 8), **kwargs)


def test_activations_render_as_html():
    model = gi.build_model("gap_cnn", seed=0, widths=(2, 2, 3), n_classes=3)
    acts = gi.extract_activations(model, torch.zeros(4, 1, 8, 8), progress=False)
    html = acts._repr_html_()
    assert html.startswith("<p>Activations(4 samples") and html.count("<table") == 2


# ---------------------------------------------------------------------------- checkpoints
def _saved(tmp_path, **extra):
    model = gi.build_model("mlp", seed=0, n_inputs=64, n_hidden=3, n_classes=10)
    return gi.save_checkpoint(model, tmp_path / "m.pt", architecture="mlp", n_inputs=64,
                              n_hidden=3, n_classes=10, **extra)


def _corrupt(tmp_path, kind: str):
    path = _saved(tmp_path, input_shape=(1, 8, 8))
    if kind == "junk":
        path.write_bytes(b"not a checkpoint")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "pickle_payload":
        path.write_bytes(pickle.dumps(print))  # code, refused by weights_only=True
    elif kind == "tensor_not_dict":
        torch.save(torch.zeros(3), path)
    elif kind == "sidecar_json":
        path.with_suffix(".json").write_text("{not json")
    elif kind == "sidecar_no_architecture":
        path.with_suffix(".json").write_text('{"config": {}}')
    elif kind == "sidecar_bad_config":
        path.with_suffix(".json").write_text('{"architecture": "mlp", "config": {"widthz": 3}}')
    elif kind == "sizes_mismatch":
        path.with_suffix(".json").write_text('{"architecture": "mlp", "config": {"n_hidden": 7, '
                                             '"n_inputs": 64, "n_classes": 10}}')
    elif kind == "other_architecture":
        path.with_suffix(".json").write_text('{"architecture": "gap_cnn", "config": {}}')
    elif kind == "unknown_architecture":
        path.with_suffix(".json").write_text('{"architecture": "resnet", "config": {}}')
    elif kind == "no_sidecar":
        path.with_suffix(".json").unlink()
    elif kind == "missing":
        path.unlink()
    return path


CKPT_CASES = [
    ("junk", ValueError, "not a weights-only PyTorch state dict"),
    ("empty", ValueError, "not a weights-only PyTorch state dict"),
    ("truncated", ValueError, "not a weights-only PyTorch state dict"),
    ("pickle_payload", ValueError, "not a weights-only PyTorch state dict"),
    ("tensor_not_dict", ValueError, "holds a Tensor, not a state dict"),
    ("sidecar_json", ValueError, "is not valid JSON"),
    ("sidecar_no_architecture", ValueError, "lacks 'architecture'"),
    ("sidecar_bad_config", ValueError, "does not take the config"),
    ("sizes_mismatch", ValueError, "does not fit architecture 'mlp'"),
    ("other_architecture", ValueError, "does not fit architecture 'gap_cnn'"),
    ("unknown_architecture", ValueError, "architecture='resnet' is not known"),
    ("no_sidecar", FileNotFoundError, "pass architecture="),
    ("missing", FileNotFoundError, "does not exist"),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(("kind", "exc", "text"), CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_refused_checkpoint(tmp_path, kind, exc, text):
    path = _corrupt(tmp_path, kind)
    with pytest.raises(exc, match=text) as e:
        load_checkpoint(path)
    assert "m.pt" in str(e.value) or "m.json" in str(e.value) or kind == "unknown_architecture"


def test_warns_cnn_on_inputs_of_another_size(tmp_path):
    model = gi.build_model("gap_cnn", seed=0, widths=(2, 2, 3), n_classes=10)
    path = gi.save_checkpoint(model, tmp_path / "cnn.pt", architecture="gap_cnn",
                              widths=[2, 2, 3], n_classes=10, input_shape=(1, 8, 8))
    with pytest.warns(UserWarning, match=r"trained on inputs of shape \(1, 8, 8\).*\(1, 28, 28\)"):
        check_input_shape(path, (1, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_input_shape(path, (1, 8, 8))  # the recorded size: no warning


def test_refused_mlp_on_inputs_of_another_size(tmp_path):
    path = _saved(tmp_path, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"takes inputs of shape \(1, 8, 8\) \(64 values\)"):
        check_input_shape(path, (1, 28, 28))


def test_warns_extracting_a_loaded_cnn_on_inputs_of_another_size(tmp_path):
    model = gi.build_model("gap_cnn", seed=0, widths=(2, 2, 3), n_classes=10)
    path = gi.save_checkpoint(model, tmp_path / "cnn.pt", architecture="gap_cnn",
                              widths=[2, 2, 3], n_classes=10, input_shape=(1, 8, 8))
    loaded = load_checkpoint(path)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    with pytest.warns(UserWarning, match=r"GapCNN \(from its checkpoint\) was trained on inputs "
                      r"of shape \(1, 8, 8\), but the data has shape \(1, 28, 28\)"):
        gi.extract_activations(loaded, torch.zeros(3, 1, 28, 28), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gi.extract_activations(loaded, torch.zeros(3, 1, 8, 8), progress=False)
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())
