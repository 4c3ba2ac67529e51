#!/usr/bin/env bash
# Speed at equal quality needs trained weights of the real size; TotalSegmentator's cannot be downloaded here.
# On one CUDA GPU, in one command:
#
#   scripts/gpu_recovery.sh OUT      (about 10 minutes on an H100, not timed in this form)
#   env: TEACHER_SECONDS (170), ITERATIONS (800), DFS ("0.3 0.2"), DEVICE (cuda), WORK (/tmp/tuckertrt-gpu)
#
# 1. trains the TS-3mm network (5 stages, 32–320 features, 118 outputs with TS ids) on the example CT with
#    TotalSegmentator's labels (scripts/train_fixture.py --ts3mm, bf16 autocast, stopped after TEACHER_SECONDS);
# 2. decomposes it at each DF in DFS and distils it on the same CT (tuckertrt finetune --distill: layer-wise
#    initialisation, KL at T=2 + Dice/CE on the teacher's labels, bf16 autocast, poly lr). With one CT there is
#    nothing to hold out that the student could learn from (the lungs lie only in the top quarter of the slices),
#    so validation is in-sample (--val-fraction 0), as is the benchmark's parity patch afterwards.
#
# OUT gets ts3mm_teacher.tar.gz.part-* (the teacher's results folder with FP16 weights, split below 16 MB),
# ts3mm_df<DF>.pt (best students, loadable as MODEL), reports.tar.gz (each run's report.json and log) and
# summary.txt. Reassemble the teacher with: cat OUT/ts3mm_teacher.tar.gz.part-* | tar xz -C DIR
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_recovery.sh OUT}
work=${WORK:-/tmp/tuckertrt-gpu}
device=${DEVICE:-cuda}
ct=tuckertrt/data/examples/example_ct.nii.gz
teacher=$work/Dataset901_TSExample3mm/nnUNetTrainer__nnUNetPlans__3d_fullres
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1

python3 scripts/train_fixture.py --ts3mm --fast --data tuckertrt/data/examples --dataset Dataset901_TSExample3mm \
  --out "$teacher" --iterations 1300 --batch 2 --device "$device" --max-seconds "${TEACHER_SECONDS:-170}" \
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
  name=ts3mm_df$df
  ( python3 -m tuckertrt finetune "$teacher" --df "$df" --distill "$ct" --val-fraction 0 --patch 112 112 128 \
      --batch-size 2 --lr 1e-3 --schedule poly --weight-decay 0 --iterations "${ITERATIONS:-800}" \
      --checkpoint-every 100 --layerwise-init --pseudo-labels 1 --amp --device "$device" -o "$work/$name" \
      > "$work/$name.log" 2>&1
    echo "== $name (exit $?)"; grep -v "training:" "$work/$name.log" | tail -n 6
    cp "$work/$name/model.pt" "$out/$name.pt"; cp "$work/$name/report.json" "$work/$name.report.json"
  ) >> "$out/summary.txt" &
done
wait
tar czf "$out/reports.tar.gz" -C "$work" $(cd "$work" && ls *.report.json *.log)
cat "$out/summary.txt"
