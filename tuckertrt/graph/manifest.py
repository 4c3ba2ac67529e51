"""``manifest.json`` beside every artifact set: provenance, tool versions, artifact hashes, comparison results.

The manifest is a plain JSON object so that other steps can add their own top-level sections
(``engines``, ``reports``, ...) with :func:`update_manifest`; :data:`SECTIONS` are always present.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import read_json, sha256_file, write_json_atomic
from tuckertrt.models.loaded import LoadedModel

MANIFEST_NAME = "manifest.json"
FORMAT = "tuckertrt-manifest/1"
SECTIONS = ("artifacts", "comparisons", "engines", "reports")
ONNX_FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}  # artifact file names in an export folder
TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxslim", "onnxconverter-common", "polygraphy", "tuckertrt")


def tool_versions(names: tuple[str, ...] = TOOLS) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = _module_version(name)
    return versions


def _module_version(name: str) -> str | None:
    try:
        module = __import__(name.replace("-", "_"))
    except ImportError:
        return None
    return getattr(module, "__version__", None)


def model_provenance(model: LoadedModel) -> dict[str, Any]:
    """Where the weights came from and how they were decomposed."""
    decomposition = model.decomposition or {}
    return {
        "name": model.name,
        "source": model.source,
        "checkpoint_sha256": model.checkpoint_sha256,
        "trained": model.trained,
        "df": decomposition.get("df"),
        "min_rank": decomposition.get("min_rank"),
        "policy": decomposition.get("policy"),
        "ranks": decomposition.get("ranks", {}),
        "skipped": decomposition.get("skipped", {}),
        "spec": model.spec.to_json(),
    }


def new_manifest(model: LoadedModel, graph: dict[str, Any]) -> dict[str, Any]:
    """A manifest with the model's provenance, the graph facts (opset, input shape, ...) and empty sections."""
    return {"format": FORMAT, "model": model_provenance(model), "graph": graph, "tools": tool_versions(),
            **{section: {} for section in SECTIONS}}


def artifact_entry(path: Path, **facts: Any) -> dict[str, Any]:
    """Hash and size of ``path`` plus any facts (precision, kind, ...)."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size, **facts}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    return write_json_atomic(Path(directory) / MANIFEST_NAME, manifest)


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an artifact directory, or a one-line error."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise TuckerTRTError(f"{directory} has no {MANIFEST_NAME} (not a tuckertrt artifact directory)")
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TuckerTRTError(f"{path} is not a {FORMAT} manifest")
    for section in SECTIONS:
        manifest.setdefault(section, {})
    return manifest


def update_manifest(directory: str | Path, section: str, key: str, value: Any) -> dict[str, Any]:
    """Set ``manifest[section][key] = value`` and rewrite the manifest atomically (e.g. section "engines")."""
    manifest = load_manifest(directory)
    manifest.setdefault(section, {})[key] = value
    write_manifest(Path(directory), manifest)
    return manifest


def add_artifact(directory: str | Path, path: str | Path, **facts: Any) -> dict[str, Any]:
    """Record a file that lies in ``directory`` (hash, size, facts) in its manifest's ``artifacts``."""
    path = Path(path)
    return update_manifest(directory, "artifacts", path.name, artifact_entry(Path(directory) / path.name, **facts))


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check ``path`` against the manifest in its directory; return its entry or raise a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise TuckerTRTError(f"artifact not found: {path}")
    entry = load_manifest(path.parent)["artifacts"].get(path.name)
    if entry is None:
        raise TuckerTRTError(f"{path.name} is not listed in {path.parent / MANIFEST_NAME}")
    size = path.stat().st_size
    if size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
        raise TuckerTRTError(f"{path} does not match its manifest (sha256/size changed): refusing to use it; "
                             f"re-export it")
    return entry
