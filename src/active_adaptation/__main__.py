"""``python -m active_adaptation``: the Label Studio ML backend (see ``backend/cli.py``)."""
import sys

from active_adaptation.backend.cli import main

sys.exit(main())
