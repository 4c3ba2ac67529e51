"""The resumable training state: one file, written atomically at each checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import atomic_path

FORMAT = "tuckertrt-training-state"


def save_state(path: Path, fingerprint: dict[str, Any], network: torch.nn.Module,
               optimizer: torch.optim.Optimizer, rng: np.random.Generator, iteration: int,
               history: list[dict[str, Any]], best: dict[str, Any] | None, bad_checks: int) -> None:
    payload = {
        "format": FORMAT, "fingerprint": fingerprint, "iteration": iteration,
        "network": network.state_dict(), "optimizer": optimizer.state_dict(),
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "history": history, "best": best, "bad_checks": bad_checks,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt file: torch raises several types
        raise TuckerTRTError(f"cannot read the training state {path}: {type(e).__name__}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TuckerTRTError(f"{path} is not a tuckertrt training state")
    saved = state["fingerprint"]
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if changed:
        raise TuckerTRTError(f"cannot resume {path}: the run differs in {', '.join(changed)} "
                             f"(was {', '.join(f'{k}={saved.get(k)!r}' for k in changed)})")
    return state
