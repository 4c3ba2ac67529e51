"""tuckertrt: post-training Tucker compression of TotalSegmentator/nnU-Net models for fast deployment.

Pipeline (one subpackage per stage): ``models`` (loading) → ``decomposition`` → ``graph`` (ONNX export,
simplify, FP16) → ``engines`` (TensorRT / TensorRT-RTX) → ``backends`` (runners) → ``inference``
(full-CT segmentation) → ``parity`` (metrics, comparisons, reports) and ``bench``.
"""
__version__ = "0.1.0"

from tuckertrt.errors import TuckerTRTError  # noqa: E402

__all__ = ["TuckerTRTError", "__version__", "decompose", "load_model"]


def __getattr__(name: str):
    # Lazy: importing the package must not pull torch for `tuckertrt --version`.
    if name == "decompose":
        from tuckertrt.decomposition import decompose

        return decompose
    if name == "load_model":
        from tuckertrt.models import load_model

        return load_model
    raise AttributeError(name)
