#!/usr/bin/env bash
# Re-train every model napari-medai ships, with the exact commands that produced the shipped
# weights (their cards record the same commands).  On the CPU (see below), about 4 hours on 2 cores and
# ~10 GB of RAM for the segmentation data; never run in CI.  For a given thread count (each
# command names the thread count its shipped run used) an fp32 run is bit-identical; a run in the
# default bf16 autocast (on a CPU with native bf16) is not: two such runs agree to about 1e-3 in
# the weights, so a model trained that way is not reproduced to its sha256.
#   bash scripts/train_models.sh [segmentation|detection|denoising ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
# The training commands run on CUDA when present (--device auto); a GPU run does not give the
# CPU run's bytes, so hide any GPU.  The denoisers are 2D fp32 runs, which repeat bit for bit for the
# same seed and thread count on the same CPU (two tiny runs compared tensor by tensor, 2026-11-29);
# the full runs were not repeated to their cards' sha256.
# The segmentation stages run in the precision their shipped runs used: stages 1-2 in the default
# bf16 autocast (their cards of 2026-11-24 say bf16 true, which that code recorded only where the
# CPU had native bf16), stages 3-4 in fp32 (--fp32; on a CPU with native bf16 the default would be
# bf16).  Stages 1-2 in bf16 are not promised to repeat bit for bit, and stages 3-4 start from
# their weights, so the shipped segmentation weights are re-trained to the same recipe, not to their
# sha256.  On a CPU without native bf16, stages 1-2 run in fp32: the recipe's precision differs
# (a warning says so).  An audit helper (2026-11-29) found that this script had put --fp32 on
# stages 1-2 as well.
export CUDA_VISIBLE_DEVICES="${MEDAI_TRAIN_GPUS:-}"
M=.venv/bin/medai
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(segmentation detection denoising)

for step in "${steps[@]}"; do case "$step" in
  segmentation)
    .venv/bin/python -c "from napari_medai.inference.precision import cpu_has_native_bf16 as f; import sys; sys.exit(not f())" \
      || echo "warning: this CPU has no native bf16, so segmentation stages 1-2 train in fp32, not in the bf16 autocast the shipped run used" >&2
    # Stage 1-2: 36 phantoms (seeds 1000-1035, their own 0-4 nodules; the first 3 validate).
    $M train segmentation --data runs/phantoms-train --phantoms 36 --phantom-seed 1000 --label-map chest \
      --out runs/seg --epochs 25 --iters-per-epoch 60 --threads 1
    $M train segmentation --data runs/phantoms-train --label-map chest --init runs/seg/best.pt \
      --out runs/seg2 --epochs 20 --iters-per-epoch 60 --lr 1e-3 --threads 1
    # Stage 3: 44 nodule-rich phantoms (seeds 1100-1143, 8 nodules each; the first 3 validate),
    # nodule-centred crops weighted 4 (background 1, lung 1).
    $M train segmentation --data runs/phantoms-rich --phantoms 44 --phantom-seed 1100 --phantom-nodules 8 \
      --label-map chest --init runs/seg2/best.pt --out runs/seg3 --epochs 30 --iters-per-epoch 80 --lr 1e-3 \
      --class-ratios 1 1 4 --threads 2 --fp32
    # Stage 4: the same data, every nodule an equally likely crop centre whatever its size
    # (stage 3 drew centres per voxel, so large nodules dominated); installs the shipped weights
    # over the installed ones (--replace; the cards sharing them are fitted again below and in
    # the detection step).
    $M train segmentation --data runs/phantoms-rich --label-map chest --init runs/seg3/best.pt \
      --out runs/seg4 --epochs 22 --iters-per-epoch 80 --lr 1e-3 --class-ratios 1 1 4 \
      --balance-components 2 --threads 2 --fp32 --install-as chest-ct-lung-nodule --replace
    # the nodule threshold, test-time mirroring (limited to where a nodule may be, only where it
    # gains) and the nodule edges moved to the CT's half-maximum contour, only for components the
    # network is sure of somewhere (extra.lesion_confident), all fitted on validation phantoms
    # 2000-2011 (the fit chose threshold 0.2).
    $M train lesion-threshold --model chest-ct-lung-nodule --try-refinement --try-confidence
    # the variant kept at the argmax (0.5): the default from 11-28 to 11-29, chosen after lung1 had
    # been seen (docs/segmentation.md, "Confident components"); same weights, not the default
    $M train lesion-threshold --model chest-ct-lung-nodule --thresholds 0.5 --try-refinement --try-confidence \
      --install-as chest-ct-lung-nodule-argmax --replace ;;
  detection)
    # post-processing fitted on validation phantoms 2000-2005 (not trained on, not benchmarked).
    # The two-stage detector (docs/detection.md) was measured and is not shipped; its commands are there.
    $M train detection --from chest-ct-lung-nodule
    # the default score threshold shown to readers: <= 1 false positive per validation scan
    $M train operating-point --model lung-nodule-detection ;;
  denoising)
    # needs the training extra (pydicom-data's real CT slices, nilearn's MNI152 template, pynrrd
    # for pyradiomics' lung2 chest CT, which training/real_ct.py fetches with pip on first use)
    .venv/bin/python -m pip install -q -e ".[training]"
    # CT (2026-11-28): every slice of lung2 added to the real slices, phantom slices x5.
    # MR (2026-11-26): noise 1-10 % log-uniform with L1 weighted by 0.05/noise level and 80 %
    # Colin27 patches (benchmarks/denoising_recipes.py).
    $M train denoising --modality CT --out runs/ct4-gan --steps 12000 --warmup-steps 10500
    mkdir -p runs/ct4-noadv && cp runs/ct4-gan/ct_pairs.npz runs/ct4-noadv/  # the same pairs, not simulated again
    $M train denoising --modality CT --out runs/ct4-noadv --steps 12000 --warmup-steps 10500 --no-adversarial \
      --resume runs/ct4-gan/warmup.pt
    $M train denoising --modality MR --out runs/mr3-gan --steps 20000 --warmup-steps 16500
    $M train denoising --modality MR --out runs/mr3-noadv --steps 20000 --warmup-steps 16500 --no-adversarial \
      --resume runs/mr3-gan/warmup.pt
    # the CT variant with a generator level at full resolution (2026-11-28; better, about 4x slower),
    # trained as long as the default since the twenty-seventh session (6000 steps before)
    mkdir -p runs/ct7-gan runs/ct7-noadv
    cp runs/ct4-gan/ct_pairs.npz runs/ct7-gan/ && cp runs/ct4-gan/ct_pairs.npz runs/ct7-noadv/
    $M train denoising --modality CT --out runs/ct7-gan --steps 12000 --warmup-steps 10500 --threads 2 --first-stride 1
    $M train denoising --modality CT --out runs/ct7-noadv --steps 12000 --warmup-steps 10500 --no-adversarial \
      --resume runs/ct7-gan/warmup.pt --threads 2 --first-stride 1
    $M train denoising --modality MR --out runs/mr6-gan --steps 12000 --warmup-steps 10500 --threads 2 --first-stride 1
    $M train denoising --modality MR --out runs/mr6-noadv --steps 12000 --warmup-steps 10500 --no-adversarial \
      --resume runs/mr6-gan/warmup.pt --threads 2 --first-stride 1
    .venv/bin/python - <<'PY'
from napari_medai.training.denoising import install_weights
W, V = "src/napari_medai/models/weights", "benchmarks/denoising_variants"
for name, gan, noadv in (("ct-lowdose-denoising", "runs/ct4-gan", "runs/ct4-noadv"),
                         ("mr-denoising", "runs/mr3-gan", "runs/mr3-noadv")):
    install_weights(gan, W, name)               # shipped: the GAN-trained generator
    install_weights(noadv, V, name, "-noadv")   # kept for the benchmark's comparison
# the variants: their cards also say extra.variant_of (descriptions and scores: see the committed cards)
import json, pathlib
for name, run, folder, suffix in (("ct-lowdose-denoising", "runs/ct7-gan", W, "-fullres"),
                                  ("ct-lowdose-denoising", "runs/ct7-noadv", V, "-fullres-noadv"),
                                  ("mr-denoising", "runs/mr6-gan", W, "-fullres"),
                                  ("mr-denoising", "runs/mr6-noadv", V, "-fullres-noadv")):
    path = install_weights(run, folder, name, suffix)
    card = json.loads(path.read_text())
    card["extra"]["variant_of"] = name
    path.write_text(json.dumps(card, indent=2) + "\n")
PY
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac; done
