"""Model loading: nnU-Net v2 results folders (old and new plans), TotalSegmentator names, presets."""
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.resolve import load_model, load_models
from tuckertrt.models.spec import IntensityProperties, ModelSpec

__all__ = ["IntensityProperties", "LoadedModel", "ModelSpec", "load_model", "load_models"]
