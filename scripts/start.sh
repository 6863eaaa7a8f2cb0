#!/usr/bin/env bash
# Install napari-medai and open napari with its widgets docked and the sample chest CT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  cat >&2 <<'MSG'
napari-medai is installed, but there is no display to open napari on (DISPLAY is not set).
Run this from a desktop session, over `ssh -X`, or on a virtual screen:
    xvfb-run -a bash scripts/start.sh
The Python API and the `medai` command work without a display: .venv/bin/medai --help
MSG
  exit 3
fi
export QT_API=pyqt6  # the binding install.sh installs, also in a venv that still has PyQt5
exec .venv/bin/python -m napari_medai "$@"
