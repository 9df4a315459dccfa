"""``python -m ml_backend``: the Label Studio ML backend (see ``ml_backend/cli.py``)."""

import sys

from ml_backend.cli import main

sys.exit(main())
