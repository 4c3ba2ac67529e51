"""``segment``'s TotalSegmentator-compatible output options: --statistics, --output-type, --roi-subset."""
from __future__ import annotations

import click

from tuckertrt.inference.dicom_outputs import OUTPUT_TYPES
from tuckertrt.inference.roi import parse_roi_names
from tuckertrt.inference.ts_outputs import TSOutputs


class _NamesOption(click.Option):
    """An option that, like TotalSegmentator's ``--roi_subset``, takes every following word up to the next option
    (``--roi-subset liver spleen``); it may also be repeated or hold comma-separated names."""

    def add_to_parser(self, parser, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for opt in self.opts:
            parsed = parser._long_opt.get(opt) or parser._short_opt.get(opt)
            if parsed is not None:
                parsed.process = self._greedy(parsed.process)

    @staticmethod
    def _greedy(process):
        def take_following(value, state) -> None:
            words = [value]
            while state.rargs and not state.rargs[0].startswith("-"):
                words.append(state.rargs.pop(0))
            process(" ".join(words), state)
        return take_following


def ts_output_options(command):
    """Add the TotalSegmentator-compatible output options to ``command``."""
    options = [
        click.option("--roi-subset", "--roi_subset", "roi_subset", cls=_NamesOption, multiple=True,
                     metavar="NAME [NAME ...]",
                     help="Keep only these classes (TotalSegmentator names, space- or comma-separated) in the "
                          "labels, masks, statistics and DICOM output."),
        click.option("--statistics", is_flag=True,
                     help="Write <case>/statistics.json: volume (mm³) and mean intensity (HU) per class, with "
                          "TotalSegmentator's keys."),
        click.option("--stats-include-incomplete", is_flag=True,
                     help="Also give statistics of classes within 3 voxels of the image border (TotalSegmentator "
                          "reports those as 0)."),
        click.option("--output-type", type=click.Choice(OUTPUT_TYPES), default="nifti", show_default=True,
                     help="dicom_seg (a DICOM-SEG) or dicom_rtstruct (an RT Structure Set), for DICOM series input "
                          "only, also writes <case>/segmentations.dcm referenced to the input series; the multilabel "
                          "NIfTI is always written."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def ts_outputs(roi_subset: tuple[str, ...], statistics: bool, stats_include_incomplete: bool, output_type: str
               ) -> TSOutputs:
    return TSOutputs(statistics=statistics, output_type=output_type, roi_subset=parse_roi_names(roi_subset),
                     stats_include_incomplete=stats_include_incomplete)
