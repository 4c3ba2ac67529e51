"""The PyTorch CUDA paths (segmentation, distillation): run on a GPU machine, skipped elsewhere.

    python -m pytest -m gpu tests/test_cuda.py
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_training import _options, synthetic_case, tiny_model
from tuckertrt.decomposition import decompose
from tuckertrt.inference.segment import as_runner, segment_volume
from tuckertrt.models import load_model
from tuckertrt.data import example_ct

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (PyTorch with CUDA)")]


def test_cuda_segmentation_matches_cpu():
    model = load_model("fixture-3mm")
    for m in (model, decompose(model, df=0.5)):
        cpu = segment_volume(example_ct(), as_runner(m, "cpu"))
        gpu = segment_volume(example_ct(), as_runner(m, "cuda"))
        assert np.mean(cpu.labels == gpu.labels) > 0.999  # cuDNN may use TF32 in convolutions


def test_distillation_runs_and_resumes_on_cuda(tmp_path):
    import nibabel as nib

    from tuckertrt.training import distill

    ct, _, affine = synthetic_case()
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(ct, affine), path)
    teacher = tiny_model()
    options = _options(6, batch_size=2)
    options.config.device = "cuda"
    best, report = distill(teacher, decompose(teacher, df=0.25, min_rank=2), [path], tmp_path / "out",
                           options=options)
    assert report["iterations"] == 6 and report["history"][-1]["train"]["agree"] > 0
    assert next(best.network.parameters()).device.type == "cpu"  # saved models load on any machine
