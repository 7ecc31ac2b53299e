"""Classic visualizations, each tied to the GLM reading of the head.

- :func:`occlusion`: Zeiler & Fergus occlusion panels (target probability, most probable label,
  total activation of the strongest map), equal to ``captum.attr.Occlusion`` on its grid.
- :func:`deconvnet`: deconvnet projection of a feature map or unit (``captum.attr.Deconvolution``).
- :func:`receptive_field`, :func:`top_activations`: top-k activating inputs per channel, their
  receptive-field patches and projections, annotated with the refit's z for a class.
- :func:`hidden_unit_fields`, :func:`rank_units`, :func:`zero_one_analysis`,
  :func:`input_importance` (Olden, Garson and the GLM-based pixel effect).
- :func:`siddhartha`, :func:`ald_regression`, :func:`recursive_split`, :func:`fit_ald`:
  most discriminative / confusing channels (Siddhartha 2022) and the GLM variant.

Every function returns data; the figures are in :mod:`glminterp.plots.saliency`.
"""

from glminterp.saliency._common import significant_units
from glminterp.saliency.deconvnet import deconvnet
from glminterp.saliency.occlusion import OcclusionResult, occlusion
from glminterp.saliency.patches import ReceptiveField, TopPatches, receptive_field, top_activations
from glminterp.saliency.receptive_fields import (
    HiddenUnitFields,
    ZeroOneResult,
    garson_importance,
    hidden_unit_fields,
    input_importance,
    input_weight_images,
    olden_importance,
    rank_units,
    zero_one_analysis,
)
from glminterp.saliency.siddhartha import (
    ALDFit,
    ChannelSplit,
    SiddharthaResult,
    ald_mle,
    ald_regression,
    fit_ald,
    masked_probability,
    recursive_split,
    restricted_class_map,
    siddhartha,
)

__all__ = [
    "ALDFit",
    "ChannelSplit",
    "HiddenUnitFields",
    "OcclusionResult",
    "ReceptiveField",
    "SiddharthaResult",
    "TopPatches",
    "ZeroOneResult",
    "ald_mle",
    "ald_regression",
    "deconvnet",
    "fit_ald",
    "garson_importance",
    "hidden_unit_fields",
    "input_importance",
    "input_weight_images",
    "masked_probability",
    "occlusion",
    "olden_importance",
    "rank_units",
    "receptive_field",
    "recursive_split",
    "restricted_class_map",
    "siddhartha",
    "significant_units",
    "top_activations",
    "zero_one_analysis",
]
