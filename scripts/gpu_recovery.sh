#!/usr/bin/env bash
# Speed at equal quality needs trained weights of the real size; TotalSegmentator's cannot be downloaded here.
# On one CUDA GPU, in one command:
#
#   scripts/gpu_recovery.sh OUT     (about 7 minutes on an H100; env: TEACHER_ITERATIONS, ITERATIONS, DFS, DEVICE)
#
# 1. trains the TS-3mm network (5 stages, 32–320 features, 118 outputs) on the example CT with TotalSegmentator's
#    labels (scripts/train_fixture.py --ts3mm), while the small fixture-3mm is distilled at DF 0.3 beside it;
# 2. decomposes the trained TS-3mm network at each DF in DFS and distils it (tuckertrt finetune --distill:
#    layer-wise initialisation, KL at T=2 + Dice/CE on the teacher's labels, bf16 autocast, poly lr) on slices
#    0–84 of the same CT, validated on slices 84–112; the runs share the GPU.
#
# OUT gets ts3mm_teacher.tar.gz.part-* (the teacher's results folder, FP16 weights, split below 16 MB),
# ts3mm_df<DF>.pt and fixture_df0.3.pt (best students, loadable as MODEL), reports.tar.gz (each run's
# report.json and log) and summary.txt.
# Reassemble the teacher with: cat OUT/ts3mm_teacher.tar.gz.part-* | tar xz -C DIR
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_recovery.sh OUT}
work=${WORK:-/tmp/tuckertrt-gpu}
ct=tuckertrt/data/examples/example_ct.nii.gz
teacher=$work/Dataset901_TSExample3mm/nnUNetTrainer__nnUNetPlans__3d_fullres
device=${DEVICE:-cuda}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1

distil() {  # MODEL DF PATCH(3) ITERATIONS NAME: best student -> OUT/NAME.pt, its report's summary -> summary.txt
  local model=$1 df=$2 iterations=$6 name=$7
  timeout -s INT "${STUDENT_SECONDS:-250}" python3 -m tuckertrt finetune "$model" --df "$df" --distill "$ct" --patch "$3" "$4" "$5" --batch-size 2 \
    --lr 1e-3 --schedule poly --weight-decay 0 --iterations "$iterations" --checkpoint-every 100 \
    --layerwise-init --pseudo-labels 1 --amp --device "$device" -o "$work/$name" > "$work/$name.log" 2>&1
  echo "== $name (exit $?)"; grep -v "training:" "$work/$name.log" | tail -n 8
  cp "$work/$name/model.pt" "$out/$name.pt" 2>/dev/null
  cp "$work/$name/report.json" "$work/$name.report.json" 2>/dev/null
}

distil fixture-3mm 0.3 64 64 64 "${FIXTURE_ITERATIONS:-3000}" fixture_df0.3 >> "$out/summary.txt" &
python3 scripts/train_fixture.py --ts3mm --fast --data tuckertrt/data/examples --dataset Dataset901_TSExample3mm \
  --out "$teacher" --iterations "${TEACHER_ITERATIONS:-1300}" --batch 2 --device "$device" --max-seconds 170 \
  > "$work/teacher.log" 2>&1
{ echo "== teacher (exit $?)"; grep -E "^iter|stopped|classes" "$work/teacher.log" | tail -n 3
  grep -E '"(train_seconds|iterations|mean_dice|mean_nsd_2mm)"' "$work/teacher.log"; } >> "$out/summary.txt"
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
for df in ${DFS:-0.3 0.2}; do
  distil "$teacher" "$df" 112 112 128 "${ITERATIONS:-700}" "ts3mm_df$df" >> "$out/summary.txt" &
done
wait
tar czf "$out/reports.tar.gz" -C "$work" $(cd "$work" && ls *.report.json *.log)
cat "$out/summary.txt"
