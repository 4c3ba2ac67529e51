"""Time rank-selection candidates and whole networks on OpenVINO / ONNX Runtime CPU, and select by those times.

The timers measure what :func:`tuckertrt.decomposition.select.latency_plan` lists; the choice itself is rank
mathematics on the measured seconds (:func:`tuckertrt.decomposition.select.choose_latency`).
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from tuckertrt.backends.ov_runner import PRECISION_ALIASES
from tuckertrt.decomposition.apply import replace_module
from tuckertrt.decomposition.select import LayerOptions, choose_latency, latency_plan
from tuckertrt.graph.deploy import inference_graph
from tuckertrt.models.loaded import LoadedModel

LayerTimer = Callable[[list[nn.Module], tuple[int, ...]], list[float]]


def _interleaved_minimum(runs: list[Callable[[], float]], repeats: int) -> list[float]:
    """Warm each run up once, then ``repeats`` rounds in turn; the minimum per run (other load on the machine
    only ever adds time, so the minimum is the robust estimate)."""
    for run in runs:
        run()
    samples = [[run() for run in runs] for _ in range(repeats)]
    return [min(column) for column in zip(*samples)]


def openvino_timer(precision: str = "bf16", threads: int | None = None, repeats: int = 5) -> LayerTimer:
    """Time modules in isolation on OpenVINO CPU at an activation shape: the summed per-node compute time
    (PERF_COUNT), leaving out the layout reorders at the isolated graph's boundary that the real network does
    not have; candidates are compiled together and timed in interleaved rounds."""
    import openvino as ov

    core = ov.Core()
    config = _profiling_config(precision, threads)
    boundary = {"Parameter", "Result", "Reorder", "Convert"}

    def compiled(module: nn.Module, shape: tuple[int, ...], x: np.ndarray) -> Callable[[], float]:
        request = core.compile_model(_openvino_model(core, module, shape), "CPU", config).create_infer_request()

        def run() -> float:
            request.infer({0: x})
            return sum(p.real_time.total_seconds() for p in request.get_profiling_info()
                       if p.node_type not in boundary)

        return run

    def timer(modules: list[nn.Module], shape: tuple[int, ...]) -> list[float]:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return _interleaved_minimum([compiled(m, shape, x) for m in modules], repeats)

    return timer


def onnxruntime_timer(threads: int | None = None, repeats: int = 5) -> LayerTimer:
    """Time modules in isolation on ONNX Runtime CPU (wall clock, interleaved rounds, minimum)."""
    import onnxruntime as ort

    def session_run(module: nn.Module, shape: tuple[int, ...], x: np.ndarray) -> Callable[[], float]:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer.onnx"
            _export_dynamic(module, shape, path)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}

        def run() -> float:
            start = time.perf_counter()
            session.run(None, feed)
            return time.perf_counter() - start

        return run

    def timer(modules: list[nn.Module], shape: tuple[int, ...]) -> list[float]:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return _interleaved_minimum([session_run(m, shape, x) for m in modules], repeats)

    return timer


def _profiling_config(precision: str, threads: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISION_ALIASES[precision],
                              "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _openvino_model(core: Any, module: nn.Module, shape: tuple[int, ...],
                    probe: tuple[int, ...] | None = None, deployed: bool = False) -> Any:
    """``module`` as an OpenVINO model with static input ``shape``; ``deployed``: in the form the CPU backends
    run (:func:`tuckertrt.graph.deploy.inference_graph`: exact rewrites, head after the sliding window)."""
    import onnx
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "module.onnx"
        _export_dynamic(module, shape, path, probe)
        if deployed:
            graph = onnx.load(str(path))
            for dim, size in zip(graph.graph.input[0].type.tensor_type.shape.dim, shape):
                dim.dim_value = size  # static shapes let the rewrites see activation sizes
            onnx.save(graph, str(path))
            return core.read_model(inference_graph(path, head="auto").source)
        model = core.read_model(str(path))
    model.reshape({0: ov.PartialShape(list(shape))})
    return model


def deployed_openvino_seconds(networks: list[nn.Module], input_shape: tuple[int, ...], probe: tuple[int, ...],
                              precision: str = "bf16", threads: int | None = None, repeats: int = 5) -> list[float]:
    """Wall time of whole ``networks`` as the CPU backends deploy them (exact rewrites, head after the sliding
    window) on OpenVINO CPU: compiled together, interleaved rounds, minimum per network."""
    import openvino as ov

    core = ov.Core()
    config = {k: v for k, v in _profiling_config(precision, threads).items() if k != "PERF_COUNT"}
    x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)

    def compiled(network: nn.Module) -> Callable[[], float]:
        model = _openvino_model(core, network, input_shape, probe, deployed=True)
        request = core.compile_model(model, "CPU", config).create_infer_request()

        def run() -> float:
            start = time.perf_counter()
            request.infer({0: x})
            return time.perf_counter() - start

        return run

    return _interleaved_minimum([compiled(n) for n in networks], repeats)


def _export_dynamic(module: nn.Module, shape: tuple[int, ...], path: Path,
                    probe: tuple[int, ...] | None = None) -> None:
    """Export at a small spatial ``probe`` size (default ≤ 16 per axis; a U-Net needs twice its total stride)
    with dynamic spatial axes — the runtime is reshaped to ``shape`` — so that tracing does not compute a
    full-resolution forward pass."""
    small = (1, shape[1], *(probe or tuple(min(s, 16) for s in shape[2:])))
    axes = {i: f"d{i}" for i in range(2, len(shape))}
    with torch.no_grad():
        torch.onnx.export(module.eval(), torch.zeros(small), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": axes})


# measure(network, {layer: LayerOptions}) -> {layer: {candidate label: seconds}}
Measure = Callable[[nn.Module, dict[str, LayerOptions]], dict[str, dict[str, float]]]


def isolated(timer: LayerTimer) -> Measure:
    """Time each layer's candidates in isolation at the layer's real input shape."""
    def measure(network: nn.Module, layers: dict[str, LayerOptions]) -> dict[str, dict[str, float]]:
        modules = dict(network.named_modules())
        return {name: dict(zip((c.label for c in opts.allowed),
                               timer([c.module(modules[name]) for c in opts.allowed], opts.shape)))
                for name, opts in layers.items()}

    return measure


def in_graph_openvino(input_shape: tuple[int, ...], probe: tuple[int, ...], precision: str = "bf16",
                      threads: int | None = None, repeats: int = 3) -> Measure:
    """Time candidates where they run: whole networks in which every layer uses its k-th candidate, compiled
    together on OpenVINO and run in interleaved rounds; each layer's time is the sum of its nodes' PERF_COUNT
    times (minimum over rounds), so layout and fusion effects of the real graph are included. ``probe``: the
    small spatial size the network is traced at (twice its total stride)."""
    import openvino as ov

    core = ov.Core()
    config = _profiling_config(precision, threads)

    def compiled(network: nn.Module, layers: list[str], x: np.ndarray) -> Callable[[], dict[str, float]]:
        model = _openvino_model(core, network, input_shape, probe)
        owner = _node_layers(model, layers)
        request = core.compile_model(model, "CPU", config).create_infer_request()

        def run() -> dict[str, float]:
            request.infer({0: x})
            per_layer: dict[str, float] = {}
            for p in request.get_profiling_info():
                layer = owner.get(p.node_name)
                if layer is not None:
                    per_layer[layer] = per_layer.get(layer, 0.0) + p.real_time.total_seconds()
            return per_layer

        return run

    def measure(network: nn.Module, layers: dict[str, LayerOptions]) -> dict[str, dict[str, float]]:
        x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
        modules = dict(network.named_modules())
        plans = []
        for k in range(max(len(opts.allowed) for opts in layers.values())):
            chosen = {name: opts.allowed[k] for name, opts in layers.items() if k < len(opts.allowed)}
            variant = copy.deepcopy(network)
            for name, cand in chosen.items():
                replace_module(variant, dict(variant.named_modules())[name], cand.module(modules[name]))
            plans.append((chosen, compiled(variant.eval(), list(chosen), x)))
        for _, run in plans:
            run()
        rounds = [[run() for _, run in plans] for _ in range(repeats)]
        out: dict[str, dict[str, float]] = {name: {} for name in layers}
        for k, (chosen, _) in enumerate(plans):
            for name, cand in chosen.items():
                best = min(r[k].get(name, 0.0) for r in rounds)
                out[name][cand.label] = min(best, out[name].get(cand.label, best))
        return out

    return measure


def _node_layers(model: Any, layers: list[str]) -> dict[str, str]:
    """OpenVINO conv op name → the layer (module name) whose weight constant feeds it."""
    by_length = sorted(layers, key=len, reverse=True)
    owner = {}
    for op in model.get_ops():
        if op.get_type_name() not in ("Convolution", "ConvolutionBackpropData"):
            continue
        source = op.input_value(1).get_node()
        while source.get_type_name() != "Constant" and source.get_input_size():
            source = source.input_value(0).get_node()
        weight = source.get_friendly_name()
        layer = next((name for name in by_length if weight.startswith(name + ".")), None)
        if layer is not None:
            owner[op.get_friendly_name()] = layer
    return owner


def select_latency(model: LoadedModel, measure: Measure, df: float, min_rank: int = 8, multiple: int = 16,
                   margin: float = 0.05, max_param_ratio: float | None = None, folds: bool = True,
                   log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Per layer, measure the candidates (see :func:`isolated`, :func:`in_graph_openvino`) and keep the fastest
    within the accuracy budget (:func:`~tuckertrt.decomposition.select.latency_plan`,
    :func:`~tuckertrt.decomposition.select.choose_latency`)."""
    plan = latency_plan(model, df, min_rank, multiple, max_param_ratio, folds)
    return choose_latency(plan, measure(model.network, plan.layers), margin, log)
