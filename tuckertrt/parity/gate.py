"""The parity gate that ``build`` and ``bench`` both apply: the compressed model's segmentation against the
uncompressed model's, by mean Dice over the reference's classes and by every class's Dice."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from tuckertrt.errors import UsageError


@dataclass(frozen=True)
class ParityGate:
    min_dice: float = 0.90  # mean Dice over the classes present in the uncompressed model's segmentation
    min_class_dice: float = 0.50  # every one of those classes

    def __post_init__(self) -> None:
        if not 0 <= self.min_dice <= 1 or not 0 <= self.min_class_dice <= 1:
            raise UsageError("--min-dice and --min-class-dice must be in [0, 1]")

    def passes(self, mean_dice: float | None, worst_class_dice: float | None) -> bool:
        """None (no foreground class in the reference) passes: there is nothing to lose."""
        return (mean_dice is None or mean_dice >= self.min_dice) and \
            (worst_class_dice is None or worst_class_dice >= self.min_class_dice)

    def describe(self) -> str:
        return f"mean Dice ≥ {self.min_dice:g}, every class ≥ {self.min_class_dice:g}"

    def to_json(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_GATE = ParityGate()
