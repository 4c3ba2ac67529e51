"""The ``tuckertrt`` command: a thin click layer over the Python API.

Subcommands live in one module each and are imported only when invoked (click's lazy-group pattern), so
``tuckertrt --help`` and ``--version`` start fast and a missing optional runtime only affects its command.
"""
from __future__ import annotations

import importlib
import sys

import click

from tuckertrt import __version__
from tuckertrt.errors import TuckerTRTError

# command name -> "module:function" (a click.Command) and its one-line help.
COMMANDS: dict[str, tuple[str, str]] = {
    "stats": ("tuckertrt.cli.stats:stats", "Parameters, MACs and ranks of a model, original vs decomposed."),
    "decompose": ("tuckertrt.cli.stats:decompose_cmd", "Decompose a model and save it (with its rank spec)."),
    "export": ("tuckertrt.cli.export:export", "Export ONNX (FP32/FP16), simplified, with a manifest."),
    "compare": ("tuckertrt.cli.export:compare", "Compare two artifacts with polygraphy; print a verdict."),
    "engine": ("tuckertrt.cli.engine:engine", "Build TensorRT / TensorRT-RTX engines from ONNX."),
    "inspect": ("tuckertrt.cli.engine:inspect", "Show an engine's sidecar manifest and compatibility."),
    "segment": ("tuckertrt.cli.segment:segment", "Segment CT volumes (NIfTI or DICOM) on any backend."),
    "build": ("tuckertrt.cli.build:build", "Decompose, export, build engines and prove parity: the whole job."),
    "bench": ("tuckertrt.cli.bench:bench", "Per-patch latency of every backend, uncompressed vs compressed."),
    "variance": ("tuckertrt.cli.toolkit:variance", "Explained-variance maps per layer (paper App. B)."),
    "finetune": ("tuckertrt.cli.toolkit:finetune", "Fine-tune a decomposed model (labels and/or distillation)."),
    "prune": ("tuckertrt.cli.toolkit:prune", "Magnitude-pruning baseline at a chosen compression ratio."),
    "report": ("tuckertrt.cli.toolkit:report", "Plots and statistics from earlier JSON results."),
    "serve": ("tuckertrt.cli.serve:serve", "Serve whole-CT segmentation on Triton Inference Server (PyTriton)."),
    "triton": ("tuckertrt.cli.serve:triton", "Write a Triton model repository for an exported network."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="tuckertrt")
def cli() -> None:
    """Compress TotalSegmentator/nnU-Net models with Tucker decomposition and deploy them fast."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code, never a traceback."""
    try:
        cli.main(args=argv, prog_name="tuckertrt", standalone_mode=False)
    except TuckerTRTError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except MemoryError:
        click.echo("Error: out of memory", err=True)
        sys.exit(1)
