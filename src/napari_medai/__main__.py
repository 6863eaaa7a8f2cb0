"""`python -m napari_medai [PATH]`: napari with the plugin's widgets docked and a volume open."""

import sys

from .app import main

sys.exit(main())
