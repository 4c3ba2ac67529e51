"""The graph a CPU backend runs: the exported ONNX, rewritten (:mod:`.rewrite`), optionally without its head
(:mod:`.head`). Both steps are exact; the artifact on disk is never changed."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.head import LinearHead, split_head
from tuckertrt.graph.rewrite import optimize

HEAD_MODES = ("graph", "host", "auto")


@dataclass
class InferenceGraph:
    """What to load: ``model`` (in memory) or ``path`` (unchanged file); ``head`` when it was split off."""

    path: Path
    model: onnx.ModelProto | None = None
    head: LinearHead | None = None
    rewrites: dict[str, int] = field(default_factory=dict)

    @property
    def source(self) -> str | bytes:
        """A file name, or the serialized rewritten graph."""
        return str(self.path) if self.model is None else self.model.SerializeToString()

    def describe(self) -> dict[str, object]:
        return {"graph_rewrites": self.rewrites or None, "head": "host" if self.head else "graph"}


def check_head_mode(head: str) -> None:
    if head not in HEAD_MODES:
        raise TuckerTRTError(f"head must be one of {', '.join(HEAD_MODES)}, not {head!r}")


def inference_graph(path: Path, rewrite: bool = True, head: str = "graph") -> InferenceGraph:
    """The graph of ``path`` to run: rewritten when ``rewrite``; ending in channels-last features when ``head`` is
    "host", or "auto" and the graph ends in a 1×1×1 convolution (else the head stays in the graph)."""
    check_head_mode(head)
    if not rewrite and head == "graph":
        return InferenceGraph(path)
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, OSError
        raise TuckerTRTError(f"cannot read ONNX model {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    rewrites: dict[str, int] = {}
    if rewrite:
        model, rewrites = optimize(model)
    split = None
    if head != "graph":
        try:
            model, split = split_head(model)
        except TuckerTRTError:
            if head == "host":
                raise
    return InferenceGraph(path, model, split, rewrites)
