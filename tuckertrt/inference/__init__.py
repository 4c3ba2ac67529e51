"""Full-CT inference matching TotalSegmentator/nnU-Net: read, preprocess, sliding window, write labels."""
from tuckertrt.inference.io import CTImage, read_ct
from tuckertrt.inference.segment import (BatchResult, Runner, SegmentationResult, merge_parts, segment_many,
                                         segment_volume)

__all__ = ["BatchResult", "CTImage", "Runner", "SegmentationResult", "merge_parts", "read_ct", "segment_many",
           "segment_volume"]
