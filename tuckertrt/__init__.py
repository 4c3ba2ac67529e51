"""tuckertrt: post-training Tucker compression of TotalSegmentator/nnU-Net models for fast deployment.

One subpackage per stage, each importing only those before it (``.importlinter`` holds the order): ``models``
(loading) → ``decomposition`` → ``graph`` (ONNX export, simplify, FP16) → ``backends`` (every runtime, PyTorch
included), ``engines`` (TensorRT / TensorRT-RTX), ``quantization`` → ``inference`` (full-CT segmentation) →
``parity`` (comparisons, gates, the proven ONNX export), ``bench``, ``training``, ``toolkit`` → ``pipeline``
(``build``, the cached ``auto`` runtime) → ``cli``.
"""
from tuckertrt.errors import TuckerTRTError  # noqa: E402
from tuckertrt.version import __version__  # noqa: E402

__all__ = ["TuckerTRTError", "__version__", "decompose", "load_model"]


def __getattr__(name: str):
    # Lazy: importing the package must not pull torch for `tuckertrt --version`.
    if name == "decompose":
        from tuckertrt.decomposition import decompose

        return decompose
    if name == "load_model":  # any MODEL argument, saved decomposed models (.pt) included
        from tuckertrt.decomposition import load_model

        return load_model
    raise AttributeError(name)
