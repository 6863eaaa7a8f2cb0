#!/usr/bin/env bash
# Install napari-medai with its test tools and run the whole test suite headlessly
# (pytest-xvfb starts a virtual X server for the napari GUI tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh testing
export QT_API=pyqt6  # the binding install.sh installs, also in a venv that still has PyQt5
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
