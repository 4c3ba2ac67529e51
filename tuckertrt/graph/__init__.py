"""ONNX graphs: export (FP32/FP16), simplification, structure checks and the artifact manifest."""
from tuckertrt.graph.export import ExportResult, export_model
from tuckertrt.graph.manifest import load_manifest, update_manifest, verify_artifact

__all__ = ["ExportResult", "export_model", "load_manifest", "update_manifest", "verify_artifact"]
