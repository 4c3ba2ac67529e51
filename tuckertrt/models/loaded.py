"""A loaded network together with its spec and provenance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tuckertrt.models.plans import Architecture
from tuckertrt.models.spec import ModelSpec


@dataclass
class LoadedModel:
    """An nnU-Net network with the plans it came from.

    ``plans``/``dataset``/``config_name`` are kept so that the same architecture can be rebuilt (e.g. to load
    a saved decomposed model) without the original folder. ``ranks`` is set once the network is decomposed.
    """

    spec: ModelSpec
    network: torch.nn.Module
    architecture: Architecture
    plans: dict[str, Any]
    dataset: dict[str, Any]
    config_name: str = "3d_fullres"
    source: str = ""
    checkpoint_sha256: str | None = None
    trained: bool = True
    decomposition: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_decomposed(self) -> bool:
        return self.decomposition is not None

    def describe(self) -> str:
        what = "random weights (architecture preset)" if not self.trained else f"weights from {self.source}"
        return f"{self.name}: {type(self.network).__name__}, patch {self.spec.patch_size}, {what}"
