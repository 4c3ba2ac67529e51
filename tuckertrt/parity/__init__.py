"""Parity: segmentation agreement metrics (Dice, NSD, label agreement) between two label maps."""
from tuckertrt.parity.metrics import ClassScore, SegmentationAgreement, compare_labels

__all__ = ["ClassScore", "SegmentationAgreement", "compare_labels"]
