"""Whole-CT segmentation served by Triton Inference Server through PyTriton: the model loads once, Triton
supplies HTTP/gRPC (KServe v2), health and readiness, Prometheus metrics and request queuing."""
from __future__ import annotations

import json
import logging
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.inference.segmenter import Segmenter
from tuckertrt.serving import protocol as p
from tuckertrt.serving.stub_patch import patch_proxy_model, prepare_stub_environment
from tuckertrt.serving.triton_repo import parameter_lines

LOG = logging.getLogger("tuckertrt.serving")
EXIT_TIMEOUT_S = 10  # how long a stopping server waits for requests in flight


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    limits: p.RequestLimits = field(default_factory=p.RequestLimits)
    instances: int = 1
    model_name: str = p.MODEL_NAME


class SegmentHandler:
    """PyTriton's inference callable: checks each request against the limits, segments, answers."""

    def __init__(self, segmenter: Segmenter, limits: p.RequestLimits):
        self.segmenter = segmenter
        self.limits = limits
        self.class_names = {str(k): v for r in segmenter.runners for k, v in r.spec.labels.items() if k != 0}

    def __call__(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        return [self.answer(dict(request)) for request in requests]

    def answer(self, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        case = p.read_case_id(request.get(p.CASE_ID))
        try:
            volume, affine = self.checked(request)
            start = time.perf_counter()
            result = self.segmenter.segment_array(volume, affine, case)
        except TuckerTRTError as e:
            LOG.warning("case=%s refused: %s", case, e)
            raise
        except Exception:
            LOG.exception("case=%s failed", case)
            raise
        LOG.info("case=%s shape=%s segmented in %.2f s (%d tiles)", case, "x".join(map(str, volume.shape)),
                 time.perf_counter() - start, result.tiles)
        info = {"dtype": result.labels.dtype.name, "seconds": result.seconds, "tiles": result.tiles,
                "tile_step": result.tile_step, "runners": result.runners}
        return {p.LABELS: np.ascontiguousarray(result.labels, dtype=np.uint16),  # the wire needs C order
                p.CLASS_NAMES: p.json_tensor({str(k): v for k, v in result.class_names.items()}),
                p.INFO: p.json_tensor(info)}

    def checked(self, request: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        given = [name for name in p.VOLUME_DTYPES if request.get(name) is not None]
        if len(given) != 1:
            raise TuckerTRTError(f"send exactly one of the inputs {' or '.join(p.VOLUME_DTYPES)}")
        volume = request[given[0]]
        self.limits.check_volume(volume.shape, volume.dtype)
        affine = request.get(p.AFFINE)
        if affine is None or affine.shape != (4, 4):
            raise TuckerTRTError(f"affine must be a 4x4 float64 matrix, got "
                                 f"{'none' if affine is None else tuple(affine.shape)}")
        return volume, affine


def tensors() -> tuple[list, list]:
    """The served model's inputs and outputs (PyTriton tensor specs)."""
    from pytriton.model_config import Tensor

    inputs = [Tensor(name=p.VOLUME, dtype=np.float32, shape=(-1, -1, -1), optional=True),
              Tensor(name=p.VOLUME_INT16, dtype=np.int16, shape=(-1, -1, -1), optional=True),
              Tensor(name=p.AFFINE, dtype=np.float64, shape=(4, 4)),
              Tensor(name=p.CASE_ID, dtype=np.uint8, shape=(-1,), optional=True)]
    outputs = [Tensor(name=p.LABELS, dtype=np.uint16, shape=(-1, -1, -1)),
               Tensor(name=p.CLASS_NAMES, dtype=np.uint8, shape=(-1,)),
               Tensor(name=p.INFO, dtype=np.uint8, shape=(-1,))]
    return inputs, outputs


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def serve(segmenter: Segmenter, options: ServeOptions, on_ready: Callable[[dict[str, str]], None] | None = None
          ) -> None:
    """Serve until SIGINT or SIGTERM, then stop Triton (waiting up to ``EXIT_TIMEOUT_S`` for requests in flight)."""
    try:
        from pytriton.model_config import ModelConfig
        from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy
    except ImportError:
        raise TuckerTRTError("serve needs PyTriton: pip install 'tuckertrt[serve]'") from None
    for port in (options.http_port, options.grpc_port, options.metrics_port):
        check_port_free(options.host, port)
    prepare_stub_environment()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    handler = SegmentHandler(segmenter, options.limits)
    inputs, outputs = tensors()
    config = TritonConfig(http_address=options.host, grpc_address=options.host, metrics_address=options.host,
                          http_port=options.http_port, grpc_port=options.grpc_port,
                          metrics_port=options.metrics_port, exit_timeout_secs=EXIT_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory(prefix="tuckertrt-triton-") as tmp:
            workspace = Path(tmp) / "workspace"
            # a local model store, written at bind and loaded at run: the proxy model is patched in between
            policy = TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)
            triton = Triton(config=config, workspace=workspace, triton_lifecycle_policy=policy)
            try:
                triton.bind(model_name=options.model_name, infer_func=[handler] * options.instances,
                            inputs=inputs, outputs=outputs, config=ModelConfig(batching=False), strict=True)
                model_dir = workspace / "model-store" / options.model_name
                patch_proxy_model(model_dir, options.limits.max_voxels)
                with open(model_dir / "config.pbtxt", "a") as config_file:
                    config_file.write("\n".join(parameter_lines({
                        p.CLASS_NAMES_PARAMETER: json.dumps(handler.class_names)})) + "\n")
                try:
                    triton.run()
                except Exception as e:  # PyTriton raises its own and tritonclient's exception types
                    raise TuckerTRTError(f"Triton Inference Server did not start ({type(e).__name__}: "
                                         f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); its log "
                                         f"is above") from None
                endpoints = {"http": f"http://{options.host}:{options.http_port}",
                             "grpc": f"grpc://{options.host}:{options.grpc_port}",
                             "metrics": f"http://{options.host}:{options.metrics_port}/metrics"}
                LOG.info("serving %s: %s", options.model_name, ", ".join(f"{k} {v}" for k, v in endpoints.items()))
                if on_ready:
                    on_ready(endpoints)
                while not stop.wait(0.5) and triton.is_alive():
                    pass
                if not stop.is_set():
                    raise TuckerTRTError("Triton Inference Server stopped unexpectedly (see its log above)")
                LOG.info("stopping")
            finally:
                triton.stop()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
