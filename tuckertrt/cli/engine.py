"""``tuckertrt engine`` (build TensorRT / TensorRT-RTX engines) and ``tuckertrt inspect`` (show an engine's sidecar)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tuckertrt.engines.builder import BuildOptions, build_engine
from tuckertrt.engines.compat import RuntimeFacts, compatibility_problems, runtime_facts
from tuckertrt.engines.runtime import TARGETS
from tuckertrt.engines.sidecar import describe_sidecar, read_sidecar, verify_engine_file
from tuckertrt.errors import MissingDependencyError, TuckerTRTError, UsageError
from tuckertrt.fileio import Problems, check_input_file, check_separate, check_writable


def _parse_sms(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    """"86,89,120" or "8.6,8.9" -> (86, 89, 120)."""
    if not value:
        return ()
    sms = []
    for item in value.split(","):
        text = item.strip().lower().removeprefix("sm").replace(".", "")
        if not text.isdigit():
            raise UsageError(f"--{param.name.replace('_', '-')}: {item.strip()!r} is not a compute capability "
                             "(write e.g. 86 or 8.6)")
        sms.append(int(text))
    return tuple(sms)


def _parse_patch(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    parts = value.lower().replace(",", "x").split("x")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--patch must look like 112x112x128, got {value!r}")
    return tuple(int(p) for p in parts)


def _parse_version(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    major, _, minor = value.partition(".")
    if not (major.isdigit() and minor.split(".")[0].isdigit()):
        raise UsageError(f"--for-trt must look like 10.13 or 1.7, got {value!r}")
    return int(major), int(minor.split(".")[0])


def check_engine_job(onnx_or_dir: Path, fp16: bool, out_dir: Path, timing_cache: Path | None) -> None:
    """Pre-flight: a readable ONNX (or export folder holding one) and an output folder that can be written and
    lies outside the input; all problems in one message."""
    from tuckertrt.engines.source import ONNX_NAMES, onnx_precision

    problems = Problems()
    source = onnx_or_dir
    if onnx_or_dir.is_dir():
        source = onnx_or_dir / ONNX_NAMES["fp16" if fp16 and (onnx_or_dir / ONNX_NAMES["fp16"]).is_file() else "fp32"]
    if problems.check(check_input_file, source, "ONNX model") is not None:
        problems.check(onnx_precision, source)
    if timing_cache is not None and timing_cache.exists():
        problems.check(check_input_file, timing_cache, "--timing-cache")
    problems.check(check_separate, [out_dir], [onnx_or_dir])
    if out_dir.exists() and not out_dir.is_dir():
        problems.errors.append(UsageError(f"output {out_dir} exists and is not a folder"))
    problems.check(check_writable, out_dir / "x")
    problems.raise_if_any()


@click.command()
@click.argument("onnx_or_dir", metavar="ONNX_OR_DIR", type=click.Path(path_type=Path))
@click.option("--fp16", is_flag=True, help="Build from the FP16 ONNX (model_fp16.onnx; an FP32 file is converted).")
@click.option("--target", type=click.Choice(TARGETS), default="trt", show_default=True,
              help="trt: full TensorRT on this GPU; rtx: TensorRT-RTX ahead of time (no GPU needed).")
@click.option("--sm", "sms", callback=_parse_sms, metavar="CC[,CC...]",
              help="TensorRT-RTX compute capabilities, e.g. 86,89,120 (default: every one it supports).")
@click.option("--workspace", "workspace_mb", type=int, metavar="MB", help="Builder workspace limit in MB.")
@click.option("--opt-level", type=int, metavar="0-5", help="Builder optimisation level (TensorRT default 3).")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Timing cache file: loaded if present, saved after the build (full TensorRT).")
@click.option("--hardware-compat", type=click.Choice(["ampere+"]),
              help="Full TensorRT: an engine that runs on every Ampere-or-newer GPU.")
@click.option("--version-compatible", is_flag=True, help="Engine that later TensorRT versions can run.")
@click.option("--patch", callback=_parse_patch, metavar="ZxYxX",
              help="Patch for an ONNX with dynamic spatial dims (default: the export manifest's patch).")
@click.option("--max-batch", type=int, default=1, show_default=True,
              help="Largest batch for an ONNX with a dynamic batch dimension.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), default="engines",
              show_default=True, help="Output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar as JSON.")
def engine(onnx_or_dir: Path, fp16: bool, target: str, sms: tuple[int, ...], workspace_mb: int | None,
           opt_level: int | None, timing_cache: Path | None, hardware_compat: str | None,
           version_compatible: bool, patch: tuple[int, ...] | None, max_batch: int, out_dir: Path,
           as_json: bool) -> None:
    """Build a TensorRT or TensorRT-RTX engine from an ONNX file or an export directory."""
    check_engine_job(onnx_or_dir, fp16, out_dir, timing_cache)
    options = BuildOptions(target=target, fp16=fp16, workspace_mb=workspace_mb, opt_level=opt_level,
                           timing_cache=timing_cache, hardware_compat=hardware_compat,
                           version_compatible=version_compatible, sms=sms, max_batch=max_batch, patch=patch)
    result = build_engine(onnx_or_dir, out_dir, options)
    if as_json:
        click.echo(json.dumps(result.sidecar, indent=2))
        return
    side = result.sidecar
    click.echo(f"{result.engine} ({side['engine_bytes'] / 2**20:.1f} MiB, {side['precision']}, "
               f"SM {', '.join(map(str, side['compute_capabilities']))}, built in {side['build_seconds']} s)")
    click.echo(f"sidecar: {result.sidecar_path}")


def _facts_for(sidecar: dict[str, Any], for_sm: tuple[int, ...], for_trt: tuple[int, int] | None
               ) -> tuple[RuntimeFacts | None, str]:
    """The runtime to check against: simulated by --for-sm/--for-trt, else this machine's (if it has one)."""
    if for_sm or for_trt:
        version = for_trt or tuple(sidecar["tensorrt"]["major_minor"])
        sm = for_sm[0] if for_sm else None
        return RuntimeFacts(sidecar["target"], version, sm), "the given target"
    try:
        return runtime_facts(sidecar["target"]), "this machine"
    except MissingDependencyError as e:
        return None, str(e)


@click.command()
@click.argument("engine_path", metavar="ENGINE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--for-sm", "for_sm", callback=_parse_sms, metavar="CC",
              help="Check against a GPU of this compute capability instead of this machine's.")
@click.option("--for-trt", callback=_parse_version, metavar="MAJOR.MINOR",
              help="Check against this TensorRT (or TensorRT-RTX) version instead of the installed one.")
@click.option("--json", "as_json", is_flag=True, help="Print sidecar and verdict as JSON.")
def inspect(engine_path: Path, for_sm: tuple[int, ...], for_trt: tuple[int, int] | None, as_json: bool) -> None:
    """Show an engine's sidecar, verify its bytes and say whether it can run here (or on --for-sm)."""
    if len(for_sm) > 1:
        raise UsageError("--for-sm takes one compute capability")
    sidecar = read_sidecar(engine_path)
    verify_engine_file(engine_path, sidecar)
    facts, against = _facts_for(sidecar, for_sm, for_trt)
    problems = compatibility_problems(sidecar, facts) if facts else []
    if as_json:
        verdict = {"checked_against": None if facts is None else {**facts.__dict__, "source": against},
                   "compatible": None if facts is None else not problems, "problems": problems}
        click.echo(json.dumps({"sidecar": sidecar, "verified": True, "compatibility": verdict}, indent=2))
    else:
        click.echo("\n".join(describe_sidecar(sidecar)))
        click.echo(f"{'bytes':<14} match the sidecar's sha256")
        if facts is None:
            click.echo(f"{'runs here':<14} not checked: {against}")
        else:
            verdict = "yes" if not problems else "no: expected " + "; expected ".join(problems)
            click.echo(f"{'runs on ' + ('target' if for_sm or for_trt else 'here'):<14} {verdict}")
    if problems and (for_sm or for_trt):
        raise TuckerTRTError(f"{engine_path.name} cannot run on the given target: expected "
                             + "; expected ".join(problems))
