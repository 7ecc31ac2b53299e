"""glminterp: the output layer of a trained network, read as the GLM it is.

Export hidden-layer activations to pandas (:func:`extract_activations`), refit the head as a
statsmodels GLM with honest inference, cross-reference with class activation maps and the
classic visualizations, and write reproducible reports.
"""

from glminterp.activations import Activations, extract_activations
from glminterp.analysis import Analysis, Plan, applicable_steps
from glminterp.cam import CAMCoefficients, CAMResult, class_activation_maps
from glminterp.data import (
    LabeledImages,
    load_digits,
    load_mnist5k,
    load_mnist_idx,
    read_idx,
    stratified_split,
    write_idx,
)
from glminterp.faithfulness import compare_faithfulness, confidence_change, deletion_insertion
from glminterp.head import Head, HeadError, detect_head
from glminterp.hooks import ActivationRecorder
from glminterp.inputs import as_labeled_images, load_idx, load_image_folder, load_npz
from glminterp.model_summary import layer_table
from glminterp.models import MLP, GapCNN, build_model, zero_one_net
from glminterp.refit import OutputLayerGLM, RefitResult, refit_output_layer
from glminterp.refit.separation import SeparationError
from glminterp.saliency import (
    deconvnet,
    hidden_unit_fields,
    input_importance,
    occlusion,
    receptive_field,
    siddhartha,
    top_activations,
    zero_one_analysis,
)
from glminterp.train import load_checkpoint, save_checkpoint, train_model

__version__ = "0.1.0"

__all__ = [
    "ActivationRecorder",
    "Activations",
    "Analysis",
    "CAMCoefficients",
    "CAMResult",
    "GapCNN",
    "Head",
    "HeadError",
    "LabeledImages",
    "MLP",
    "OutputLayerGLM",
    "Plan",
    "RefitResult",
    "applicable_steps",
    "as_labeled_images",
    "SeparationError",
    "build_model",
    "class_activation_maps",
    "compare_faithfulness",
    "confidence_change",
    "deconvnet",
    "deletion_insertion",
    "detect_head",
    "extract_activations",
    "hidden_unit_fields",
    "input_importance",
    "layer_table",
    "load_checkpoint",
    "load_digits",
    "load_idx",
    "load_image_folder",
    "load_mnist5k",
    "load_mnist_idx",
    "load_npz",
    "occlusion",
    "read_idx",
    "receptive_field",
    "refit_output_layer",
    "save_checkpoint",
    "siddhartha",
    "stratified_split",
    "top_activations",
    "train_model",
    "write_idx",
    "zero_one_analysis",
    "zero_one_net",
]
