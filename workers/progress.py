"""Progress events from inside Ray workers to the driver's terminal.

A worker prints one line, `TAG` + JSON; Ray forwards worker output to the driver, whose
orchestrator.run_output turns tagged lines into the user's progress lines and writes every other
line to the run's log. Written to stdout directly, not logged (a worker's logging setup may drop INFO
records) and not through `print`, which Ray Train's workers patch to log the line a second time.
"""
from __future__ import annotations

import json
import sys

TAG = "haloc-progress "


def emit(kind: str, **fields) -> None:
    """Print one progress event (fields must be JSON-serialisable; non-finite floats become null)."""
    clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in fields.items()}
    sys.stdout.write(TAG + json.dumps({"kind": kind, **clean}, default=str) + "\n")
    sys.stdout.flush()
