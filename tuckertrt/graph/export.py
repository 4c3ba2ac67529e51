"""Export a (decomposed) model to ONNX: FP32 and FP16 graphs, simplified, structure-checked, with a manifest.

The exporter is torch's TorchScript exporter (``dynamo=False``), traced in memory on a small probe patch with
symbolic spatial axes that are then fixed to the model's patch. Tracing the full 112×112×128 patch costs 10-18 s
here against 0.6 s for the probe; the dynamo exporter needs onnxscript (not a dependency) and takes ~5 s for the
same graph. The traced graph has no shape-dependent ops (convolutions, InstanceNormalization, LeakyReLU, Concat),
and the torch-vs-ONNX Runtime comparison on the full patch (:mod:`tuckertrt.parity.export`) proves the result.
"""
from __future__ import annotations

import io
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import atomic_dir, check_replaceable, ensure_output_dir
from tuckertrt.graph import manifest as mf
from tuckertrt.graph.manifest import ONNX_FILES
from tuckertrt.graph.fp16 import to_fp16
from tuckertrt.graph.simplify import check_simplifier, simplify
from tuckertrt.graph.structure import check_conv_layers, duplicated_initializers, op_counts
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.spec import ModelSpec

DEFAULT_OPSET = 17
DEFAULT_ROOT = Path("export")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class ExportResult:
    """What an export wrote: the directory, its artifacts by precision, and the manifest."""

    out_dir: Path
    artifacts: dict[str, Path]
    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.get("passed", True) for c in self.manifest["comparisons"].values())


def check_patch(spec: ModelSpec, patch: tuple[int, ...] | None) -> tuple[int, ...]:
    """``patch`` (default: the model's) if every axis is a positive multiple of the network's downsampling."""
    patch = tuple(int(p) for p in (patch or spec.patch_size))
    if len(patch) != len(spec.downsampling):
        raise TuckerTRTError(f"patch {patch} has {len(patch)} axes, the network takes {len(spec.downsampling)}")
    bad = [(p, d) for p, d in zip(patch, spec.downsampling) if p <= 0 or p % d]
    if bad:
        raise TuckerTRTError(f"patch {'x'.join(map(str, patch))} does not fit the network: each axis must be a "
                             f"positive multiple of its downsampling {'x'.join(map(str, spec.downsampling))}")
    return patch


def default_out_dir(model: LoadedModel, root: Path = DEFAULT_ROOT) -> Path:
    """``export/<model>_df<DF>`` (DF 1 for an undecomposed model)."""
    df = (model.decomposition or {}).get("df") or 1.0
    return root / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', model.name)}_df{df:g}"


def executed_convs(network: nn.Module, shape: tuple[int, ...]) -> list[str]:
    """Names of the conv modules one forward pass calls, in call order (decomposed parts included)."""
    names = {id(m): n for n, m in reversed(list(network.named_modules()))}  # first name of a shared module
    called: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: called.append(names[id(mod)]))
             for m in network.modules() if isinstance(m, _CONVS)]
    try:
        with torch.inference_mode():
            network(torch.zeros(shape))
    finally:
        for h in hooks:
            h.remove()
    return called


def torch_to_onnx(network: nn.Module, input_shape: tuple[int, ...], num_classes: int, opset: int = DEFAULT_OPSET,
                  dynamic_batch: bool = False, probe: tuple[int, ...] | None = None) -> onnx.ModelProto:
    """Trace ``network`` in memory on a probe patch and return a graph with static ``input_shape``.

    ``input_shape`` is (N, C, *patch); with ``dynamic_batch`` the batch axis stays symbolic ("batch").
    """
    spatial = {i: f"s{i}" for i in range(2, len(input_shape))}
    axes = {0: "batch", **spatial}
    probe_shape = (1, input_shape[1], *(probe or input_shape[2:]))
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # TorchScript-exporter deprecation and instance_norm train-mode notes
        warnings.simplefilter("ignore")
        torch.onnx.export(network.eval(), torch.zeros(probe_shape), buffer, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True,
                          dynamic_axes={"input": axes, "logits": axes})
    model = onnx.load_from_string(buffer.getvalue())
    del model.graph.value_info[:]
    _set_shape(model.graph.input[0], input_shape, dynamic_batch)
    _set_shape(model.graph.output[0], (input_shape[0], num_classes, *input_shape[2:]), dynamic_batch)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _set_shape(value: onnx.ValueInfoProto, shape: tuple[int, ...], dynamic_batch: bool) -> None:
    dims = value.type.tensor_type.shape.dim
    for i, (dim, size) in enumerate(zip(dims, shape)):
        if i == 0 and dynamic_batch:
            dim.dim_param = "batch"
        else:
            dim.dim_value = size


@dataclass
class ExportedGraphs:
    """An export in memory, before it is written: the traced graph and the graphs to write, by precision.

    ``traced`` is the graph before simplification (``graphs["fp32"]`` is the same graph when ``simplifier`` is
    "none"); ``info`` becomes the manifest's ``graph`` section; ``seconds`` the time each step took.
    """

    model: LoadedModel
    out_dir: Path
    patch: tuple[int, ...]
    traced: onnx.ModelProto
    graphs: dict[str, onnx.ModelProto]
    simplifier: str
    info: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def export_graphs(model: LoadedModel, out_dir: str | Path | None = None, *, patch: tuple[int, ...] | None = None,
                  fp16: bool = True, simplifier: str = "onnxsim", dynamic_batch: int | None = None,
                  opset: int = DEFAULT_OPSET) -> ExportedGraphs:
    """Trace ``model`` to ONNX, simplify it, check its structure and (``fp16``) convert it, all in memory.

    ``out_dir`` (default :func:`default_out_dir`) is checked first, so that a bad destination fails before the
    export's work. ``dynamic_batch`` (max batch) makes the batch axis symbolic. Nothing has run the graphs yet:
    :func:`tuckertrt.parity.export.export_model` proves them (the simplified graph against the traced one, and
    with ``verify`` against PyTorch) before :func:`write_export` writes them.
    """
    check_simplifier(simplifier)
    if opset < 17:
        raise TuckerTRTError(f"opset {opset} is too old: InstanceNormalization/ConvTranspose need opset >= 17 here")
    if dynamic_batch is not None and dynamic_batch < 1:
        raise TuckerTRTError(f"--dynamic-batch must be a positive integer, got {dynamic_batch}")
    spec = model.spec
    patch = check_patch(spec, patch)
    out_dir = Path(out_dir) if out_dir else default_out_dir(model)
    _check_out_dir(out_dir)
    input_shape = (1, spec.input_channels, *patch)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    probe = tuple(2 * d for d in spec.downsampling)
    traced = torch_to_onnx(model.network, input_shape, spec.num_classes, opset, dynamic_batch is not None, probe)
    timings["export"] = time.perf_counter() - start

    start = time.perf_counter()
    simplified, simplifier = simplify(traced, simplifier)
    graphs = {"fp32": simplified}
    timings["simplify"] = time.perf_counter() - start
    structure = _check_structure(graphs["fp32"], model, (1, spec.input_channels, *probe))
    if fp16:
        start = time.perf_counter()
        graphs["fp16"] = to_fp16(graphs["fp32"])
        timings["fp16"] = time.perf_counter() - start

    info = {"opset": opset, "input_shape": list(input_shape), "output_shape": [1, spec.num_classes, *patch],
            "dynamic_batch": dynamic_batch, "input_name": "input", "output_name": "logits",
            "exporter": "torch.onnx (TorchScript, in memory)", "simplifier": simplifier,
            "parameters": sum(p.numel() for p in model.network.parameters()),
            "ops": op_counts(graphs["fp32"]), "structure": structure}
    return ExportedGraphs(model, out_dir, patch, traced, graphs, simplifier, info, timings)


def write_export(exported: ExportedGraphs, comparisons: dict[str, dict]) -> ExportResult:
    """Write ``exported``'s graphs and ``manifest.json`` (with ``comparisons``, the proofs run on them) into its
    ``out_dir``, atomically: a temp dir renamed into place."""
    info = {**exported.info, "seconds": {k: round(v, 2) for k, v in exported.seconds.items()}}
    manifest = mf.new_manifest(exported.model, info)
    manifest["comparisons"] = comparisons
    out_dir = exported.out_dir
    try:
        with atomic_dir(out_dir) as tmp:
            for precision, proto in exported.graphs.items():
                name = ONNX_FILES[precision]
                onnx.save_model(proto, str(tmp / name))
                manifest["artifacts"][name] = mf.artifact_entry(tmp / name, kind="onnx", precision=precision)
            mf.write_manifest(tmp, manifest)
    except OSError as e:  # disk full, permissions changed meanwhile: the temp dir is already gone
        raise TuckerTRTError(f"cannot write the export into {out_dir}: {e.strerror or e}") from None
    artifacts = {precision: out_dir / ONNX_FILES[precision] for precision in exported.graphs}
    return ExportResult(out_dir, artifacts, manifest, dict(exported.seconds))


def _check_out_dir(out_dir: Path) -> None:
    """Refuse a file, an unwritable place, or a non-empty directory that is not an earlier export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TuckerTRTError(f"output path {out_dir} exists and is not a directory")
    check_replaceable(out_dir)  # absent, empty, or an earlier export holding only tuckertrt's files
    parent = ensure_output_dir(out_dir.parent)
    try:  # os.access says yes to root everywhere; only a real write tells (e.g. /proc, read-only mounts)
        Path(tempfile.mkdtemp(prefix=".tuckertrt-probe-", dir=parent)).rmdir()
    except OSError as e:
        raise TuckerTRTError(f"cannot write into {parent}: {e.strerror}") from None


def _check_structure(graph: onnx.ModelProto, model: LoadedModel, probe_shape: tuple[int, ...]) -> dict[str, Any]:
    duplicates = duplicated_initializers(graph)
    if duplicates:
        raise TuckerTRTError(f"ONNX graph stores {len(duplicates)} weight(s) more than once, e.g. {duplicates[0]}")
    ranks = (model.decomposition or {}).get("ranks", {})
    return check_conv_layers(graph, executed_convs(model.network, probe_shape), ranks)
