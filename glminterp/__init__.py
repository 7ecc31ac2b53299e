"""glminterp: the output layer of a trained network, read as the GLM it is.

Export hidden-layer activations to pandas (:func:`extract_activations`), refit the head as a
statsmodels GLM with honest inference, cross-reference with class activation maps and the
classic visualizations, and write reproducible reports.

Names are imported lazily (PEP 562): ``import glminterp.engine`` or ``glminterp.scale`` loads
numpy/pandas/scipy only, so Dask workers running the chunk kernels never import torch;
``glminterp.extract_activations`` and friends import their modules on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Analysis": "glminterp.analysis",
    "Plan": "glminterp.analysis",
    "applicable_steps": "glminterp.analysis",
    "as_labeled_images": "glminterp.inputs",
    "load_idx": "glminterp.inputs",
    "load_image_folder": "glminterp.inputs",
    "load_npz": "glminterp.inputs",
    "layer_table": "glminterp.model_summary",
    "ActivationRecorder": "glminterp.hooks",
    "Activations": "glminterp.activations",
    "CAMCoefficients": "glminterp.maps.cam",
    "CAMResult": "glminterp.maps.cam",
    "GapCNN": "glminterp.models",
    "Head": "glminterp.head",
    "HeadError": "glminterp.head",
    "LabeledImages": "glminterp.data",
    "MLP": "glminterp.models",
    "OutputLayerGLM": "glminterp.refit",
    "RefitResult": "glminterp.refit",
    "SeparationError": "glminterp.refit.separation",
    "build_model": "glminterp.models",
    "class_activation_maps": "glminterp.maps.cam",
    "compare_faithfulness": "glminterp.maps.faithfulness",
    "confidence_change": "glminterp.maps.faithfulness",
    "deconvnet": "glminterp.saliency",
    "deletion_insertion": "glminterp.maps.faithfulness",
    "detect_head": "glminterp.head",
    "extract_activations": "glminterp.activations",
    "hidden_unit_fields": "glminterp.saliency",
    "input_importance": "glminterp.saliency",
    "load_checkpoint": "glminterp.train",
    "load_digits": "glminterp.data",
    "load_mnist5k": "glminterp.data",
    "load_mnist_idx": "glminterp.data",
    "occlusion": "glminterp.saliency",
    "read_idx": "glminterp.data",
    "receptive_field": "glminterp.saliency",
    "refit_output_layer": "glminterp.refit",
    "save_checkpoint": "glminterp.train",
    "siddhartha": "glminterp.saliency",
    "stratified_split": "glminterp.data",
    "top_activations": "glminterp.saliency",
    "train_model": "glminterp.train",
    "write_idx": "glminterp.data",
    "zero_one_analysis": "glminterp.saliency",
    "zero_one_net": "glminterp.models",
}

__version__ = "0.1.0"

__all__ = sorted(_LAZY)

# Module paths from before the refit package (glminterp.glm, glminterp.firth, ...).
_OLD_MODULES = {"glm": "glminterp.refit", "diagnostics": "glminterp.refit.diagnostics",
                "firth": "glminterp.refit.firth", "parametrize": "glminterp.refit.parametrize",
                "penalized": "glminterp.refit.penalized", "separation": "glminterp.refit.separation"}


def __getattr__(name: str) -> Any:
    if name in _OLD_MODULES:
        value = importlib.import_module(_OLD_MODULES[name])
        globals()[name] = value
        return value
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'glminterp' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
