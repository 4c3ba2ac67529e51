"""``tuckertrt serve`` (whole-CT segmentation on Triton) and ``tuckertrt triton`` (a Triton model repository)."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import click

from tuckertrt.backends.registry import AUTO
from tuckertrt.cli.backend_option import backend_asked, backend_option, cache_dir_option, open_auto_models
from tuckertrt.cli.options import decomposition_options, download_option, tile_step_option
from tuckertrt.errors import UsageError


def model_loader(model: str, decomposition: tuple, download: bool, backend: str | None, artifacts: Path | None,
                 precision: str | None, device: str | None, cache_dir: Path | None = None,
                 threads: int | None = None, log: Callable[[str], None] = click.echo) -> functools.partial:
    """What ``segment`` would load for these options, as a picklable call (run where the model is needed, e.g.
    a Ray worker with another working directory: paths are made absolute). MODEL may be an export folder: its
    manifest names the model, the folder is the artifact (onnxruntime unless --backend says).

    ``--backend auto`` (the default) is resolved here, once, before any worker starts: exported and measured on
    first use, else the cache entry opened and verified (what it chose goes to ``log``); the call then opens the
    entry's runtime (with ``threads``) and exports nothing."""
    from tuckertrt.cli.segment import _runners
    from tuckertrt.fileio import read_json

    if Path(model).exists():
        model = str(Path(model).resolve())
    artifacts = artifacts.resolve() if artifacts is not None else None
    manifest = Path(model) / "manifest.json"
    if artifacts is None and manifest.is_file():
        if backend == AUTO:
            raise UsageError(f"{model} is an export: serve it with --backend onnxruntime or openvino (auto exports "
                             f"a model ref itself)")
        artifacts, backend = Path(model), backend or "onnxruntime"
        model = read_json(manifest, "export manifest")["model"]["name"]
    backend = backend_asked(backend, artifacts, precision, device)
    if backend == AUTO:
        cached = []
        for auto in open_auto_models(model, decomposition, download, cache_dir, log):
            auto.runner.predictor.close()  # the loader opens it again where it runs
            cached.append(auto.cached)
        return functools.partial(open_cached, tuple(cached), threads)
    return functools.partial(_runners, model, decomposition, download, backend, artifacts, precision or "fp32",
                             device)


def open_cached(cached: tuple, threads: int | None) -> list:
    """The runners of resolved ``--backend auto`` entries (:class:`~tuckertrt.bench.auto_backend.CachedChoice`)."""
    return [c.open(threads) for c in cached]


@click.command("serve")
@click.argument("model", metavar="MODEL_OR_EXPORT")
@decomposition_options
@download_option
@backend_option("An export folder as MODEL runs on onnxruntime unless --backend says.")
@click.option("--artifacts", type=click.Path(path_type=Path), default=None,
              help="For onnxruntime/openvino: an export folder or .onnx file; for tensorrt: an engine file.")
@click.option("--precision", default=None, help="Backend precision (default fp32; auto chooses its own).")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@cache_dir_option
@tile_step_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback sends patient images over the network: put the "
                   "server behind a TLS/authenticating proxy.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--max-voxels", type=click.IntRange(min=8), default=None,
              help="Largest volume a request may declare [default: 1024x1024x2048].")
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Requests segmented at once (the model is shared).")
def serve(model: str, df: float | None, min_rank: int, policy: str, ranks_file: str | None, download: bool,
          backend: str | None, artifacts: Path | None, precision: str | None, device: str | None,
          cache_dir: Path | None, tile_step: float,
          host: str, http_port: int, grpc_port: int, metrics_port: int, max_voxels: int | None,
          instances: int) -> None:
    """Serve whole-CT segmentation with MODEL (a model ref, or an export folder) on Triton Inference Server.

    The runtime is --backend auto unless said: chosen (and on first use exported) before the server starts.
    Send CTs with ``tuckertrt segment CT -o OUT --server http://HOST:PORT``. Stops on Ctrl-C or SIGTERM."""
    from tuckertrt.inference.segmenter import Segmenter
    from tuckertrt.serving.protocol import RequestLimits
    from tuckertrt.serving.server import ServeOptions, serve as run_server

    if len({http_port, grpc_port, metrics_port}) != 3:
        raise UsageError("--http-port, --grpc-port and --metrics-port must differ")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    loader = model_loader(model, (df, min_rank, policy, ranks_file), download, backend, artifacts, precision,
                          device, cache_dir, log=logging.getLogger("tuckertrt.serving").info)
    segmenter = Segmenter.load(loader, tile_step)
    limits = RequestLimits(max_voxels) if max_voxels else RequestLimits()
    options = ServeOptions(host, http_port, grpc_port, metrics_port, limits, instances)
    run_server(segmenter, options, on_ready=lambda ends: click.echo(
        "ready: " + ", ".join(f"{k} {v}" for k, v in ends.items()), err=True))


@click.command("triton")
@click.argument("export_dir", metavar="EXPORT_DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", "repo", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Triton model repository (created; may hold other models).")
@click.option("--name", default=None, help="Model name in the repository (default: from the manifest).")
@click.option("--backend", type=click.Choice(["onnxruntime", "openvino", "tensorrt"]), default="onnxruntime",
              show_default=True)
@click.option("--engine", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The TensorRT engine to serve (--backend tensorrt).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True)
def triton(export_dir: Path, repo: Path, name: str | None, backend: str, engine: Path | None, precision: str,
           instances: int) -> None:
    """Write a standard Triton model repository for the network exported in EXPORT_DIR."""
    from tuckertrt.serving.triton_repo import write_triton_repo

    click.echo(describe_repo(write_triton_repo(export_dir, repo, name, backend, engine, instances, precision)))


def describe_repo(model) -> str:
    def tensors(items) -> str:
        return ", ".join(f"{t.name} {t.data_type[5:]} {list(t.shape)}" for t in items)

    return (f"Triton model {model.name} ({model.backend}, max_batch_size {model.max_batch_size}) -> "
            f"{model.folder}/\n  inputs: {tensors(model.inputs)}\n  outputs: {tensors(model.outputs)}")
