#!/usr/bin/env bash
# Install everything napari-medai needs into ./.venv on a Debian/Ubuntu machine.
#   bash scripts/install.sh            # plugin + PyQt6
#   bash scripts/install.sh testing    # plus the test tools
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="pyqt6${1:+,$1}"
PY="${PYTHON:-python3}"

# System libraries for Qt's xcb platform and a virtual X server for headless runs.  Qt 6 also
# needs libxcb-cursor0 and links GLib (`ldd` on PyQt6's libQt6Core and its xcb plugin).
apt_pkgs=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-randr0
          libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0
          libx11-xcb1 libglib2.0-0 libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libfontconfig1 libdbus-1-3)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "Installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A first install unpacks about 2 GB into .venv (torch alone is most of it) and pip stages
# wheels in the temporary folder: check the room up front, so a full disk gets a clear
# message instead of pip's OSError halfway through (the partial .venv would stay behind).
# asked once: importing torch takes seconds, and the torch step below needs the same answer
has_torch=no
[ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null && has_torch=yes
if [ "$has_torch" = no ]; then
  need_mb=3000
  for dir in . "${TMPDIR:-/tmp}"; do
    free_mb=$(df -Pm "$dir" | awk 'NR==2 {print $4}')
    if [ -n "$free_mb" ] && [ "$free_mb" -lt "$need_mb" ]; then
      echo "napari-medai install: only ${free_mb} MB free in $(cd "$dir" && pwd); the first" \
           "install needs about ${need_mb} MB there. Free some space and run it again." >&2
      exit 1
    fi
  done
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -U pip
# torch first, pinned to the CPU wheel: left to resolve on its own (monai needs torch),
# pip would pick the newest CUDA build and several GB of nvidia packages.
# Where pip's index would serve the CUDA build (plain PyPI on Linux x86_64), point it at the CPU
# wheels: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/start.sh
[ "$has_torch" = yes ] || .venv/bin/python -m pip install -q "torch==2.13.0" \
  ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -e ".[${extras}]"
