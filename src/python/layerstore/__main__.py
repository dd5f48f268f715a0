"""``python -m layerstore``: the same as the ``layerstore`` command."""

import sys

from layerstore.cli import main

sys.exit(main())
