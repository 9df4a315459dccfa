"""``python -m ml_backend.simulation``: the active-learning simulation (see ``runner.py``)."""

import os

os.environ.setdefault("PYTHONHASHSEED", "0")

from ml_backend.simulation.runner import main  # noqa: E402

raise SystemExit(main())
