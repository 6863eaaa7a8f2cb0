#!/usr/bin/env bash
# The checks that need a CUDA GPU (never part of CI, which has none): the Qt-free tests, where
# the API and the trainers pick the GPU themselves (device "auto"), and benchmarks/bench_gpu.py,
# which runs every shipped model and both trainers on the GPU against the CPU in the same run.
# Needs torch with CUDA, monai, nibabel, pydicom, scikit-image and scipy; not napari or Qt.
#   bash scripts/gpu_check.sh [OUT_DIR]      (default runs/gpu-check; logs and JSON land there)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('CUDA', torch.cuda.is_available(), torch.version.cuda)"
# GUI tests need napari and a display: they run in CI, not here
"$PY" -m pytest -q -p no:cacheprovider -o addopts=-ra -o filterwarnings=ignore::DeprecationWarning \
  -m "not gui" tests --ignore=tests/widgets --ignore=tests/napari_hooks 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
"$PY" benchmarks/bench_gpu.py --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench"
exit $((tests || bench))
