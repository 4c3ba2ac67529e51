"""One small interface for every runtime: load an artifact, run a patch, describe yourself.

Runners are created by :func:`tuckertrt.backends.open_backend`; the comparison and inference code only
ever sees this protocol (the polygraphy pattern: runners per backend, comparator apart).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from tuckertrt.graph.head import LinearHead


@runtime_checkable
class Backend(Protocol):
    """A loaded model ready to run patches.

    ``run`` takes a float32 array ``(N, C_in, *patch)`` in the network's axis order and returns float32 logits
    ``(N, num_classes, *patch)``; or, when ``head`` is set (loaded with ``head="host"``/``"auto"``), channels-last
    features ``(N, *patch, F)`` (float32 or bfloat16) that ``head`` turns into logits after the sliding window.
    ``input_shape`` is the shape the artifact was built for (static N=1 unless the artifact has a dynamic batch).
    ``describe`` returns JSON-able facts (backend, precision, device, versions).
    """

    name: str
    precision: str
    input_shape: tuple[int, ...]
    head: LinearHead | None

    def run(self, patch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
