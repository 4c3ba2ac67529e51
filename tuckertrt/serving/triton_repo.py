"""A standard Triton model repository for an exported network: ``<name>/config.pbtxt`` + ``<name>/1/<model>``.

The network serves patches, as exported (input/output names, dims and dtypes come from the ONNX graph); any
Triton with the onnxruntime, openvino or tensorrt backend loads it as is. Whole-CT segmentation (pre-processing,
sliding window, post-processing) is what ``tuckertrt serve`` adds on top.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.fileio import atomic_dir, read_json, sha256_file

TRITON_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
# ONNX TensorProto element type -> Triton data type
_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
                   6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64",
                   12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
MAX_QUEUE_DELAY_US = 2000  # dynamic batching: how long a patch may wait for others to fill a batch


@dataclass(frozen=True)
class TensorInfo:
    name: str
    data_type: str
    shape: tuple[int, ...]  # -1 for a dynamic axis


@dataclass
class TritonModel:
    """What :func:`write_triton_repo` wrote."""

    name: str
    folder: Path
    backend: str
    model_file: Path
    max_batch_size: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


def graph_tensors(onnx_path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The graph's real inputs (initializers excluded) and outputs, with Triton data types."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as e:  # onnx raises DecodeError, OSError...
        raise TuckerTRTError(f"{onnx_path} is not a readable ONNX model ({type(e).__name__})") from None
    initializers = {i.name for i in graph.initializer}

    def info(value) -> TensorInfo:
        t = value.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise TuckerTRTError(f"{onnx_path}: tensor {value.name} has an element type Triton cannot serve")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorInfo(value.name, _ONNX_TO_TRITON[t.elem_type], dims)

    return ([info(v) for v in graph.input if v.name not in initializers], [info(v) for v in graph.output])


def write_triton_repo(export_dir: str | Path, repo: str | Path, name: str | None = None,
                      backend: str = "onnxruntime", engine: str | Path | None = None, instances: int = 1,
                      precision: str = "fp32") -> TritonModel:
    """Write ``repo/<name>/`` for the network in ``export_dir`` (a ``tuckertrt export`` folder).

    ``backend``: onnxruntime (``1/model.onnx``), openvino (``1/model.xml`` + ``.bin``, converted from the ONNX
    graph) or tensorrt (``1/model.plan``, a copy of ``engine``). ``repo`` may hold other models; ``<name>/`` must
    not exist yet."""
    export_dir, repo = Path(export_dir), Path(repo)
    if backend not in TRITON_BACKENDS:
        raise UsageError(f"Triton backend must be one of {', '.join(TRITON_BACKENDS)}, not {backend}")
    if (backend == "tensorrt") != (engine is not None):
        raise UsageError("a TensorRT model repository needs --engine (and only it takes one)")
    if instances < 1:
        raise UsageError(f"instances must be at least 1, got {instances}")
    manifest = read_json(export_dir / "manifest.json", "export manifest")
    onnx_name = {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}.get(precision)
    if onnx_name is None or onnx_name not in manifest.get("artifacts", {}):
        raise UsageError(f"{export_dir} has no {precision} ONNX model (exported: "
                         f"{', '.join(manifest.get('artifacts', {})) or 'none'})")
    onnx_path = export_dir / onnx_name
    if sha256_file(onnx_path) != manifest["artifacts"][onnx_name]["sha256"]:
        raise TuckerTRTError(f"{onnx_path} does not match the sha256 in its manifest (changed after export?)")
    name = name or _model_name(manifest)
    folder = repo / name
    if folder.exists():
        raise UsageError(f"{folder} already exists; choose another --triton-name or repository")
    inputs, outputs = graph_tensors(onnx_path)
    batched = all(t.shape and t.shape[0] == -1 for t in inputs + outputs)
    max_batch = int(manifest["graph"].get("dynamic_batch") or 0) if batched else 0
    if batched and max_batch < 1:
        raise TuckerTRTError(f"{onnx_path} has a dynamic batch axis but the manifest records no maximum batch")
    with atomic_dir(folder) as tmp:
        version = tmp / "1"
        version.mkdir()
        model_file = _write_model(backend, onnx_path, engine, version)
        parameters = {"tuckertrt.model": manifest["model"]["name"],
                      "tuckertrt.onnx_sha256": manifest["artifacts"][onnx_name]["sha256"],
                      "tuckertrt.checkpoint_sha256": manifest["model"].get("checkpoint_sha256") or "",
                      "tuckertrt.model_file_sha256": sha256_file(version / model_file),
                      "tuckertrt.labels": json.dumps(manifest["model"].get("spec", {}).get("labels", {}))}
        text = config_pbtxt(name, backend, model_file, max_batch, inputs, outputs, instances, parameters)
        (tmp / "config.pbtxt").write_text(text)
    return TritonModel(name, folder, backend, folder / "1" / model_file, max_batch, inputs, outputs)


def _model_name(manifest: dict) -> str:
    model = manifest["model"]
    suffix = f"_df{model['df']:g}".replace(".", "p") if model.get("df") else ""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in f"{model['name']}{suffix}")


def _write_model(backend: str, onnx_path: Path, engine: str | Path | None, version: Path) -> str:
    if backend == "onnxruntime":
        shutil.copyfile(onnx_path, version / "model.onnx")
        return "model.onnx"
    if backend == "openvino":
        try:
            import openvino as ov
        except ImportError:
            raise TuckerTRTError("the openvino Triton backend needs OpenVINO to convert the model "
                                 "(pip install 'tuckertrt[openvino]')") from None
        ov.save_model(ov.convert_model(str(onnx_path)), str(version / "model.xml"), compress_to_fp16=False)
        return "model.xml"
    engine = Path(engine)
    if not engine.is_file():
        raise UsageError(f"engine not found: {engine}")
    shutil.copyfile(engine, version / "model.plan")
    return "model.plan"


def config_pbtxt(name: str, backend: str, model_file: str, max_batch: int, inputs: list[TensorInfo],
                 outputs: list[TensorInfo], instances: int, parameters: dict[str, str]) -> str:
    """Triton's ``config.pbtxt`` (protobuf text format of ``inference.ModelConfig``)."""
    def tensors(kind: str, items: list[TensorInfo]) -> list[str]:
        lines = [f"{kind} ["]
        for i, t in enumerate(items):
            dims = t.shape[1:] if max_batch else t.shape
            lines.append(f"  {{ name: {json.dumps(t.name)}, data_type: {t.data_type}, "
                         f"dims: [ {', '.join(map(str, dims))} ] }}{',' if i < len(items) - 1 else ''}")
        return lines + ["]"]

    platform = 'platform: "tensorrt_plan"' if backend == "tensorrt" else f'backend: "{backend}"'
    kind = "KIND_GPU" if backend == "tensorrt" else "KIND_CPU"
    lines = [f"name: {json.dumps(name)}", platform, f'default_model_filename: "{model_file}"',
             f"max_batch_size: {max_batch}", *tensors("input", inputs), *tensors("output", outputs),
             f"instance_group [ {{ count: {instances}, kind: {kind} }} ]"]
    if max_batch:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}")
    return "\n".join(lines + parameter_lines(parameters)) + "\n"


def parameter_lines(parameters: dict[str, str]) -> list[str]:
    """``parameters`` entries of a ``config.pbtxt`` (string values)."""
    return [f"parameters {{ key: {json.dumps(key)} value: {{ string_value: {json.dumps(value)} }} }}"
            for key, value in parameters.items()]
