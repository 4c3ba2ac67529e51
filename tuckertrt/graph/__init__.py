"""ONNX graphs: export (FP32/FP16), simplification, structure checks and the artifact manifest.

The export written with its parity proofs is :func:`tuckertrt.parity.export.export_model`.
"""
from tuckertrt.graph.export import ExportedGraphs, ExportResult, export_graphs, write_export
from tuckertrt.graph.manifest import load_manifest, update_manifest, verify_artifact

__all__ = ["ExportResult", "ExportedGraphs", "export_graphs", "load_manifest", "update_manifest", "verify_artifact",
           "write_export"]
