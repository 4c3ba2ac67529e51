"""Defaults of full-CT inference, in one place (light to import: the CLI reads them when it declares options)."""

DEFAULT_TILE_STEP = 0.8  # sliding-window step as a fraction of the patch: TotalSegmentator's `total` task
