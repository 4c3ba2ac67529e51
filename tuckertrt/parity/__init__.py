"""Parity: segmentation agreement metrics (Dice, NSD, label agreement) between two label maps."""
from tuckertrt.parity.gate import DEFAULT_GATE, ParityGate
from tuckertrt.parity.metrics import ClassScore, SegmentationAgreement, compare_labels

__all__ = ["ClassScore", "DEFAULT_GATE", "ParityGate", "SegmentationAgreement", "compare_labels"]
