"""Send CTs to a ``tuckertrt serve`` server with tritonclient and write exactly what a local ``segment`` writes."""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import numpy as np

from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.inference.io import read_ct
from tuckertrt.inference.segment import BatchResult, SegmentationResult
from tuckertrt.serving import protocol as p

DEFAULT_CONCURRENCY = 2
NETWORK_TIMEOUT_S = 3600.0  # a whole CT on a busy CPU server can take minutes


@dataclass(frozen=True)
class ServerAddress:
    protocol: str  # "http" or "grpc"
    host_port: str
    model: str = p.MODEL_NAME

    @classmethod
    def parse(cls, url: str) -> "ServerAddress":
        """``http://HOST:PORT``, ``grpc://HOST:PORT`` or ``HOST:PORT`` (HTTP); a path names another model."""
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "grpc") or not parsed.hostname or parsed.port is None:
            raise UsageError(f"--server {url!r}: expected http://HOST:PORT or grpc://HOST:PORT "
                             f"(TLS belongs to the proxy in front of the server)")
        model = parsed.path.strip("/") or p.MODEL_NAME
        return cls(parsed.scheme, parsed.netloc, model)


class SegmentClient:
    """One connection to a server; :meth:`segment` is whole-CT segmentation of one image."""

    def __init__(self, address: ServerAddress):
        try:
            if address.protocol == "grpc":
                import tritonclient.grpc as triton
            else:
                import tritonclient.http as triton
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise TuckerTRTError("--server needs tritonclient: pip install 'tuckertrt[serve]'") from None
        self.address, self.triton, self.server_error = address, triton, InferenceServerException
        options = {} if address.protocol == "grpc" else {"connection_timeout": NETWORK_TIMEOUT_S,
                                                         "network_timeout": NETWORK_TIMEOUT_S}
        self.client = triton.InferenceServerClient(address.host_port, **options)

    def check_ready(self) -> None:
        try:
            ready = self.client.is_model_ready(self.address.model)
        except Exception as e:  # connection refused, DNS... (tritonclient wraps them inconsistently)
            raise TuckerTRTError(f"server {self.address.host_port} does not answer: {_first_line(e)}") from None
        if not ready:
            raise TuckerTRTError(f"server {self.address.host_port} has no ready model {self.address.model}")

    def segment(self, ct: str | os.PathLike) -> SegmentationResult:
        image = read_ct(ct)
        volume = image.array
        as_int16 = np.array_equal(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767
        name = p.VOLUME_INT16 if as_int16 else p.VOLUME
        tensors = {name: volume.astype(p.VOLUME_DTYPES[name]), p.AFFINE: image.affine.astype(np.float64),
                   p.CASE_ID: p.case_id_tensor(image.case_name)}
        answer = self.infer(tensors, [p.LABELS, p.CLASS_NAMES, p.INFO])
        info = p.read_json_tensor(answer[p.INFO], "the server's info")
        names = {int(k): v for k, v in p.read_json_tensor(answer[p.CLASS_NAMES], "the server's class names").items()}
        labels = answer[p.LABELS]
        if labels.shape != volume.shape:
            raise TuckerTRTError(f"server answered labels of shape {labels.shape} for a volume of {volume.shape}")
        return SegmentationResult(image, labels.astype(info["dtype"]), names, info["seconds"], info["tiles"],
                                  info["runners"], info["tile_step"])

    def infer(self, tensors: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        inputs = []
        for name, array in tensors.items():
            tensor = self.triton.InferInput(name, list(array.shape), _triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        requested = [self.triton.InferRequestedOutput(o) for o in outputs]
        try:
            result = self.client.infer(self.address.model, inputs, outputs=requested)
        except self.server_error as e:
            raise TuckerTRTError(f"server: {e.message() or e}") from None
        return {o: result.as_numpy(o) for o in outputs}

    def close(self) -> None:
        self.client.close()


def _triton_dtype(dtype: np.dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(dtype)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def segment_remote(inputs: Iterable[str | os.PathLike], out: str | os.PathLike, url: str, masks: bool = False,
                   concurrency: int = DEFAULT_CONCURRENCY,
                   on_case: Callable[[str, str | None], None] | None = None) -> BatchResult:
    """Segment CTs on a server, ``concurrency`` cases in flight, into ``out`` as :func:`segment_many` writes
    them (the same plan, input guard and writer). A failing case is recorded and the others go on."""
    from tuckertrt.inference.segmenter import plan_case_outputs

    inputs = [Path(i) for i in inputs]
    address = ServerAddress.parse(url)
    _served_class_names(address)  # checks that the server answers before any work
    plan = plan_case_outputs(inputs, Path(out), masks)
    result = BatchResult()

    def run(job: tuple[Path, Any]) -> tuple[str, Any]:
        source, dest = job
        client = SegmentClient(address)
        try:
            seg = client.segment(source)
            return dest.case, (seg, seg.save(dest.labels, masks))
        except (TuckerTRTError, OSError, MemoryError) as e:
            return dest.case, str(e) or type(e).__name__
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for case, outcome in pool.map(run, zip(inputs, plan)):
            if isinstance(outcome, str):
                result.failed[case] = outcome
            else:
                seg, written = outcome
                result.written[case], result.summaries[case] = written, seg.summary()
            if on_case:
                on_case(case, result.failed.get(case))
    return result


def _served_class_names(address: ServerAddress) -> list[str]:
    """The class names the server's model writes (in its config's parameters); asking checks it answers."""
    client = SegmentClient(address)
    try:
        client.check_ready()
        config = client.client.get_model_config(address.model)
    finally:
        client.close()
    config = config.get("config", config) if isinstance(config, dict) else _message_to_dict(config.config)
    text = config.get("parameters", {}).get(p.CLASS_NAMES_PARAMETER, {}).get("string_value")
    if text is None:
        raise TuckerTRTError(f"model {address.model} on {address.host_port} does not list its class names")
    return list(json.loads(text).values())


def _message_to_dict(message: Any) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)
