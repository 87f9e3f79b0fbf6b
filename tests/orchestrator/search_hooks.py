"""Trial callbacks the search tests inject (workers.search_trainable.TrialCallback): they run in the
trials' worker processes, so they live in an importable module and write what they see to files."""
from __future__ import annotations

import json
import time
from pathlib import Path

from workers.search_trainable import TrialCallback


def starts(trace_dir: Path) -> list[dict]:
    """What TraceStarts recorded: one line per trial start (its start epoch)."""
    path = Path(trace_dir) / "starts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TraceStarts(TrialCallback):
    """Appends {trial_id, targets, budget, seed, start_epoch} to <trace_dir>/starts.jsonl at each start."""

    def __init__(self, trace_dir):
        self.trace_dir = str(trace_dir)

    def on_trial_start(self, config, start_epoch, trial_id):
        line = json.dumps({"trial_id": trial_id, "targets": config["targets"], "budget": config["budget"],
                           "seed": config["seed"], "start_epoch": start_epoch})
        with open(Path(self.trace_dir) / "starts.jsonl", "a") as f:
            f.write(line + "\n")


class FailOnce(TrialCallback):
    """Raises once at the start of `epoch` in the trial whose config matches `match` (a marker file
    makes it once across restarts)."""

    def __init__(self, match: dict, epoch: int, marker):
        self.match, self.epoch, self.marker = dict(match), int(epoch), str(marker)

    def on_epoch_start(self, config, epoch):
        if epoch != self.epoch or any(config.get(k) != v for k, v in self.match.items()):
            return
        marker = Path(self.marker)
        if not marker.exists():
            marker.write_text("failed once\n")
            raise RuntimeError(f"injected failure in epoch {epoch} (test callback FailOnce)")


class SleepAfterEpoch(TrialCallback):
    """Keeps a trial alive long enough for a test to kill its driver or worker."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    def on_epoch_end(self, config, epoch, report):
        time.sleep(self.seconds)
