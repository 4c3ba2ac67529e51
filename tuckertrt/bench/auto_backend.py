"""``--backend auto``: the fastest runtime that runs the model faithfully on this machine, exported once and cached.

On first use a model is exported to ONNX, every installed CPU runtime is checked against PyTorch on a real-CT
patch and timed (:func:`~tuckertrt.inference.backend_choice.choose_backend`), and the export and the choice are
stored in a cache entry keyed by the model (weights and decomposition), the runtimes and their versions and the
CPU. Later runs open the cached artifact on the chosen runtime without exporting or measuring again.

An entry is written in a temporary folder beside it and renamed into place, so a reader sees a whole entry or
none; an entry that does not verify (unreadable ``choice.json``, a key that does not match, artifact hashes that
differ from the export manifest) is never trusted: it is removed and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuckertrt.backends.registry import open_backend
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import read_json, write_json_atomic
from tuckertrt.graph.manifest import tool_versions
from tuckertrt.inference.backend_choice import BackendChoice, choose_backend
from tuckertrt.inference.patches import default_patch
from tuckertrt.inference.segment import Runner
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.spec import ModelSpec
from tuckertrt.parity.export import export_model
from tuckertrt.version import __version__

CACHE_ENV = "TUCKERTRT_CACHE"
FORMAT = "tuckertrt-auto-cache/1"
CHOICE_FILE = "choice.json"
RUNTIMES = ("torch", "onnx", "onnxruntime", "openvino", "tuckertrt")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$TUCKERTRT_CACHE``, else ``~/.cache/tuckertrt``."""
    root = Path(cache_dir) if cache_dir else Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tuckertrt")
    return root.expanduser().absolute()  # absolute: a worker with another working directory opens the same entry


def model_hash(model: LoadedModel) -> str:
    """SHA-256 of what the model computes: its spec, its decomposition (ranks) and every weight."""
    h = hashlib.sha256(json.dumps({"spec": model.spec.to_json(), "decomposition": model.decomposition},
                                  sort_keys=True, default=str).encode())
    for name, tensor in model.network.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def runtime_facts() -> dict[str, Any]:
    """What a cached choice depends on besides the model: tuckertrt's and the runtimes' versions (an export made
    by another version may differ) and the CPU it was measured on."""
    return {"tuckertrt": __version__, "versions": tool_versions(RUNTIMES), "cpu": cpu_model(),
            "machine": platform.machine(), "threads": os.cpu_count()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass
class AutoBackend:
    """The chosen runtime, opened on the cached artifact, and how it came to be."""

    runner: Runner
    choice: BackendChoice
    entry: Path
    exported: bool  # True when this call exported and measured (first use, or a rebuilt entry)
    seconds: float  # export + parity check + timing when ``exported``, else opening the cached artifact
    rebuilt_because: str | None = None  # why an existing entry was not trusted

    @property
    def cached(self) -> "CachedChoice":
        """What another process on this machine needs to open the same entry (without exporting or measuring)."""
        return CachedChoice(self.runner.spec, self.entry, self.choice)

    def describe(self) -> str:
        how = (f"exported and measured in {self.seconds:.1f} s" if self.exported
               else f"cached, opened in {self.seconds:.1f} s")
        why = f"; rebuilt: {self.rebuilt_because}" if self.rebuilt_because else ""
        return f"{self.choice.backend} {self.choice.precision} ({how}; {self.choice.reason}; {self.entry}{why})"


@dataclass(frozen=True)
class CachedChoice:
    """A resolved cache entry, picklable: a server or cohort resolves ``auto`` once in its parent process and its
    workers open the entry with :meth:`open`."""

    spec: ModelSpec
    entry: Path
    choice: BackendChoice

    def open(self, threads: int | None = None) -> Runner:
        if not (self.entry / CHOICE_FILE).is_file():
            raise TuckerTRTError(f"the --backend auto cache entry {self.entry} is not on {platform.node()}: give "
                                 f"--cache-dir a folder every worker's machine reads at the same path")
        return open_entry(self.spec, self.entry, self.choice, threads)


def entry_path(model: LoadedModel, root: Path, facts: dict[str, Any] | None = None) -> Path:
    """The cache folder of ``model`` under ``root``: ``<model hash>/<runtime hash>``."""
    facts = facts or runtime_facts()
    runtime = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
    return root / model_hash(model)[:24] / runtime[:16]


def open_auto(model: LoadedModel, cache_dir: str | os.PathLike | None = None,
              log: Callable[[str], None] = lambda message: None, threads: int | None = None) -> AutoBackend:
    """The fastest faithful runtime for ``model``: from the cache, or exported, checked and timed now; opened with
    ``threads`` (default: the runtime's own)."""
    start = time.perf_counter()
    facts = runtime_facts()
    entry = entry_path(model, cache_root(cache_dir), facts)
    problem = None
    if entry.exists():
        try:
            choice = _read_entry(entry, facts)
            runner = open_entry(model.spec, entry, choice, threads)
            return AutoBackend(runner, choice, entry, False, time.perf_counter() - start)
        except (TuckerTRTError, OSError, KeyError, TypeError, ValueError) as e:
            problem = str(e).splitlines()[0] if str(e) else type(e).__name__
            log(f"cache entry {entry} is not valid ({problem}); rebuilding it")
            _remove(entry)
    else:
        log(f"first use of {model.name} with these runtimes: exporting and measuring (cache: {entry})")
    choice = _build_entry(model, entry, facts)
    runner = open_entry(model.spec, entry, choice, threads)
    return AutoBackend(runner, choice, entry, True, time.perf_counter() - start, problem)


def open_entry(spec: ModelSpec, entry: Path, choice: BackendChoice, threads: int | None = None) -> Runner:
    """The chosen runtime opened on the entry's export (``threads``: the runtime's default when None)."""
    backend = open_backend(choice.backend, entry / "onnx", choice.precision, head="auto", threads=threads)
    return Runner(spec, backend, {"cache_entry": str(entry), "choice": choice.reason})


def _read_entry(entry: Path, facts: dict[str, Any]) -> BackendChoice:
    """The recorded choice, after checking the entry is whole and made for this model and these runtimes."""
    record = read_json(entry / CHOICE_FILE, "cache record")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise TuckerTRTError(f"{CHOICE_FILE} is not a {FORMAT} record")
    if record.get("runtime") != json.loads(json.dumps(facts)):
        raise TuckerTRTError("recorded for other runtimes")
    c = record["choice"]
    return BackendChoice(c["backend"], c["precision"], c["reason"], c["candidates"])


def _build_entry(model: LoadedModel, entry: Path, facts: dict[str, Any]) -> BackendChoice:
    """Export, check and time in a temporary folder beside ``entry``, then rename it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".part", dir=entry.parent))
    try:
        patch, label = default_patch(model.spec)
        started = time.perf_counter()
        export = export_model(model, tmp / "onnx", fp16=False, verify_input=patch, input_label=label)
        export_seconds = time.perf_counter() - started
        reference = open_backend("torch", model, device="cpu").run(patch)
        choice = choose_backend(export.artifacts["fp32"], patch, reference)
        write_json_atomic(tmp / CHOICE_FILE, {"format": FORMAT, "model": model.name, "runtime": facts,
                                               "choice": choice.to_json(), "export_seconds": round(export_seconds, 2),
                                               "measured_seconds": round(time.perf_counter() - started, 2)})
        try:
            os.replace(tmp, entry)
        except OSError:  # another process finished the same entry first: keep its entry
            if not entry.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return _read_entry(entry, facts)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return choice


def _remove(entry: Path) -> None:
    """Move an untrusted entry aside (one rename, so no reader sees it half-deleted), then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".stale", dir=entry.parent))
    try:
        os.replace(entry, aside / "entry")
    except FileNotFoundError:  # another process removed it first
        pass
    shutil.rmtree(aside, ignore_errors=True)
