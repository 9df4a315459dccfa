"""``python -m active_adaptation.simulation``: the active-learning simulation (see ``runner.py``)."""
import os

os.environ.setdefault("PYTHONHASHSEED", "0")

from active_adaptation.simulation.runner import main  # noqa: E402

raise SystemExit(main())
