"""PyTorch backend: runs the (original or decomposed) nn.Module directly, on CPU or CUDA (the reference, and the
debugging runtime)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tuckertrt.errors import TuckerTRTError
from tuckertrt.models.loaded import LoadedModel


class TorchBackend:
    name = "torch"

    def __init__(self, network: torch.nn.Module, input_shape: tuple[int, ...], precision: str = "fp32",
                 device: str | None = None):
        if precision not in ("fp32", "fp16", "bf16"):
            raise TuckerTRTError(f"torch backend supports fp32/fp16/bf16, not {precision}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "fp16" and self.device.type != "cuda":
            raise TuckerTRTError("torch fp16 autocast needs CUDA; use fp32 or bf16 on the CPU")
        self.network = network.to(self.device).eval()
        self.precision = precision
        self.input_shape = tuple(input_shape)
        self.head = None

    @classmethod
    def load(cls, artifact: LoadedModel | torch.nn.Module, precision: str = "fp32", device: str | None = None,
             input_shape: tuple[int, ...] | None = None, head: str = "graph", **options: Any) -> "TorchBackend":
        """``artifact``: a :class:`LoadedModel` (input shape: one patch of it) or a bare network with
        ``input_shape``. The network keeps its head (``head`` "graph" or "auto")."""
        if options:
            raise TuckerTRTError(f"torch backend: unknown option(s) {', '.join(sorted(options))}")
        if head not in ("graph", "auto"):
            raise TuckerTRTError("the torch backend runs the whole network; use head='graph'")
        if isinstance(artifact, LoadedModel):
            spec = artifact.spec
            shape = input_shape or (1, spec.input_channels, *spec.patch_size)
            return cls(artifact.network, shape, precision, device)
        if isinstance(artifact, torch.nn.Module) and input_shape is not None:
            return cls(artifact, input_shape, precision, device)
        raise TuckerTRTError(f"the torch backend runs a loaded model (or a network with its input shape), "
                             f"not {type(artifact).__name__}")

    @staticmethod
    def available() -> bool:
        return True

    @torch.inference_mode()
    def run(self, patch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)).to(self.device)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            y = self.network(x)
        return y.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "precision": self.precision, "device": str(self.device),
                "torch": torch.__version__, "threads": torch.get_num_threads()}

    def close(self) -> None:
        self.network.cpu()
