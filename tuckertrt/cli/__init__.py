"""The ``tuckertrt`` command: a thin click layer over the Python API.

Subcommands live in one module each and are imported only when invoked (click's lazy-group pattern), so
``tuckertrt --help`` and ``--version`` start fast and a missing optional runtime only affects its command.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

import click

from tuckertrt.version import __version__
from tuckertrt.errors import Terminated, TuckerTRTError
from tuckertrt.fileio import raise_terminated

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
    """Entry point: user errors become one line on stderr and a non-zero exit code, never a traceback.

    SIGTERM raises :class:`~tuckertrt.errors.Terminated`, so a scheduler's stop cleans up like Ctrl-C (exit 143)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        cli.main(args=argv, prog_name="tuckertrt", standalone_mode=False)
    except TuckerTRTError as e:
        _fail(f"Error: {e}", e.exit_code)
    except click.exceptions.Abort:
        _fail("Aborted.", 130)
    except click.UsageError as e:  # one line, with where to look, instead of click's usage block
        where = e.ctx.command_path if e.ctx is not None else "tuckertrt"
        _fail(f"Error: {e.format_message()} (see '{where} --help')", e.exit_code)
    except click.ClickException as e:
        _fail(f"Error: {e.format_message()}", e.exit_code)
    except KeyboardInterrupt:
        _fail("Interrupted.", 130)
    except Terminated:
        _fail("Terminated.", 143)
    except MemoryError:
        _fail("Error: out of memory", 1)
    except OSError as e:  # disk full, permission changed mid-run...: the outputs were staged, nothing published
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        _fail(f"Error: {e.strerror or e}{where}", 1)
    except Exception as e:  # a defect: still one line, the traceback on request
        if os.environ.get("TUCKERTRT_DEBUG"):
            raise
        _fail(f"Error: internal error ({type(e).__name__}: {_one_line(e)}); rerun with TUCKERTRT_DEBUG=1 for "
              f"the traceback and report it", 1)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "no message"


def _fail(message: str, code: int) -> None:
    click.echo(" ".join(message.split("\n")), err=True)
    sys.exit(code)
