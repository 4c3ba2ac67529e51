#!/usr/bin/env bash
# One GPU, one command: a trained TS-3mm-size teacher, its DF 0.3 student recovered by the default recipe
# (data-aware initialisation, then distillation) with the held-out patient checked at every checkpoint, and the
# GPU latency of both. TotalSegmentator's own weights cannot be downloaded where this was written, so step 1
# trains the TS-3mm network on the example CT; with real weights, start at step 2 with MODEL = total-3mm.
#
#   scripts/gpu_recovery.sh OUT
#   env: TEACHER_SECONDS (150), ITERATIONS (600), DEVICE (cuda), WORK (/tmp/tuckertrt-gpu)
#
# 1. train the TS-3mm network (5 stages, 32–320 features, 118 outputs with TS ids) on the example CT with
#    TotalSegmentator's labels (scripts/train_fixture.py --ts3mm, bf16 autocast, stopped after TEACHER_SECONDS);
# 2. tuckertrt finetune TEACHER --df 0.3 --distill example_ct example_dicom --val-fraction 0.5: distils on the
#    example CT and validates on the other patient's DICOM series (held out) at every checkpoint;
# 3. scores the best student against the teacher on both CTs (in-sample and held out);
# 4. GPU latency per patch (benchmarks/gpu_torch.py) and whole CT (benchmarks/gpu_whole_ct.py).
#
# OUT gets ts3mm_teacher.tar.gz.part-* (the teacher's results folder, FP16 weights, split below 16 MB; reassemble
# with: cat OUT/ts3mm_teacher.tar.gz.part-* | tar xz -C DIR), ts3mm_df0.3.pt, results.tar.gz and summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_recovery.sh OUT}
work=${WORK:-/tmp/tuckertrt-gpu}
device=${DEVICE:-cuda}
ct=tuckertrt/data/examples/example_ct.nii.gz
dicom=tuckertrt/data/examples/example_ct_dicom
teacher=$work/Dataset901_TSExample3mm/nnUNetTrainer__nnUNetPlans__3d_fullres
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
log() { echo "== $*" | tee -a "$out/summary.txt"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> "$out/summary.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" >> "$out/summary.txt"

log "teacher $(date -u +%T)"
python3 scripts/train_fixture.py --ts3mm --fast --data tuckertrt/data/examples --dataset Dataset901_TSExample3mm \
  --out "$teacher" --iterations 1300 --batch 2 --device "$device" --max-seconds "${TEACHER_SECONDS:-150}" \
  > "$work/teacher.log" 2>&1
grep -E "stopped|classes|\"(train_seconds|iterations|mean_dice|mean_nsd_2mm)\"" "$work/teacher.log" | tail -n 6 >> "$out/summary.txt"
sha256sum "$teacher/fold_0/checkpoint_final.pth" >> "$out/summary.txt"

log "recovery $(date -u +%T)"
python3 -m tuckertrt finetune "$teacher" --df 0.3 --distill "$ct" "$dicom" --val-fraction 0.5 \
  --patch 112 112 128 --batch-size 2 --iterations "${ITERATIONS:-600}" --checkpoint-every 100 --amp \
  --device "$device" -o "$work/df0.3" > "$work/df0.3.log" 2>&1
tail -n 7 "$work/df0.3.log" >> "$out/summary.txt"
cp "$work/df0.3/model.pt" "$out/ts3mm_df0.3.pt" && sha256sum "$out/ts3mm_df0.3.pt" >> "$out/summary.txt"

log "scores $(date -u +%T)"
python3 - "$teacher" "$work/df0.3/model.pt" "$ct" "$dicom" >> "$out/summary.txt" 2>&1 <<'PY'
import sys
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.serialize import load_decomposed
from tuckertrt.inference.segment import as_runner, segment_volume
from tuckertrt.decomposition import load_model
from tuckertrt.bench.parity import dice_summary
teacher = load_model(sys.argv[1]); student = load_decomposed(sys.argv[2]); zero = decompose(teacher, df=0.3)
for ct, kind in ((sys.argv[3], "in-sample (distilled on it)"), (sys.argv[4], "held out (other patient)")):
    ref = segment_volume(ct, as_runner(teacher, "cuda")).labels
    for name, m in (("zero-shot", zero), ("recovered", student)):
        mean, worst = dice_summary(ref, segment_volume(ct, as_runner(m, "cuda")).labels)
        print(f"{kind:28s} {name:10s} mean Dice vs teacher {mean:.4f}, worst class {worst:.3f}")
PY

log "latency $(date -u +%T)"
python3 benchmarks/gpu_torch.py --df 1 0.3 --modes fp32 fp16 bf16 fp16-cuda-graph fp16-compile --rounds 3 \
  --iters 10 --json "$work/gpu_torch.json" >> "$out/summary.txt" 2>&1
python3 benchmarks/gpu_whole_ct.py --model "$teacher" --compressed "$work/df0.3/model.pt" --ct "$ct" "$dicom" \
  --rounds 3 --json "$work/gpu_whole_ct.json" >> "$out/summary.txt" 2>&1

log "pack $(date -u +%T)"
python3 - "$teacher" <<'PY'  # FP16 weights: the checkpoint must come back below 16 MB a file
import sys, torch
path = sys.argv[1] + "/fold_0/checkpoint_final.pth"
ckpt = torch.load(path, weights_only=False)
halves = {}  # one FP16 copy per storage: the network reaches each conv under two names
ckpt["network_weights"] = {k: halves.setdefault((v.data_ptr(), v.shape), v.half()) if v.is_floating_point() else v
                           for k, v in ckpt["network_weights"].items()}
torch.save(ckpt, path)
PY
tar czf - -C "$work" Dataset901_TSExample3mm | split -b 15M - "$out/ts3mm_teacher.tar.gz.part-"
tar czf "$out/results.tar.gz" -C "$work" teacher.log df0.3.log df0.3/report.json gpu_torch.json gpu_whole_ct.json
cat "$out/summary.txt"
