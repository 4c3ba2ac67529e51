"""What inference needs to know about a model, read from nnU-Net's plans.json and dataset.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class IntensityProperties:
    """CT normalisation statistics of the foreground (nnU-Net's ``CTNormalization``)."""

    mean: float
    std: float
    lower: float  # percentile_00_5
    upper: float  # percentile_99_5


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a network except its weights.

    ``patch_size`` and ``spacing`` are in the network's axis order: the array as the plans' image reader
    returns it (``reader_axes``: "zyx" for SimpleITKIO, "xyz" for NibabelIO) transposed by
    ``transpose_forward``.
    """

    name: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    num_classes: int
    labels: dict[int, str]
    normalization: str = "CTNormalization"
    intensity: IntensityProperties | None = None
    reader_axes: str = "zyx"
    transpose_forward: tuple[int, ...] = (0, 1, 2)
    transpose_backward: tuple[int, ...] = (0, 1, 2)
    input_channels: int = 1
    downsampling: tuple[int, ...] = field(default=(1, 1, 1))  # total stride per axis

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelSpec":
        d = dict(d)
        d["labels"] = {int(k): v for k, v in d["labels"].items()}
        if d.get("intensity"):
            d["intensity"] = IntensityProperties(**d["intensity"])
        for k in ("patch_size", "spacing", "transpose_forward", "transpose_backward", "downsampling"):
            d[k] = tuple(d[k])
        return cls(**d)
