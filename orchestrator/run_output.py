"""What the user sees while a run works: the project's own lines on the terminal; Ray's, Tune's and
Train's output (and anything else written to the driver's stdout/stderr) in a log file of the run.

    output = RunOutput(console, verbose=False)
    output.begin(log_path)                 # after the input checks: a refused run writes no log
    output.event({"kind": "search_epoch", ...})   # progress, from the stages (and the workers)
    output.end(failed=False)               # the terminal back; on a failure, the log is named

The redirection is at the file-descriptor level (dup2 of 1 and 2), so lines that Ray's C++ core
writes straight to stderr (e.g. core_worker.cc warnings) land in the log too, not only Python's.
The console keeps a duplicate of the terminal's descriptor taken before. Worker lines reach the
driver through Ray's log forwarding; `ray_compat.route_worker_logs` hands them to `worker_lines`,
which writes them to the log, and turns the project's own progress lines (workers.progress) into
events. With `verbose`, worker lines go to the terminal as well, as before.

Plain mode (`--no-progress`, or output that is not a terminal): one complete line per event, no
escape codes, no truncated ids; in a terminal the search is a live table of its trials.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

from workers.progress import TAG

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def terminal_console():
    """A rich Console on a duplicate of the driver's stderr, so it still reaches the terminal after
    `begin` points descriptor 2 at the log. A long line stays one line (soft wrap) in a log file."""
    from rich.console import Console

    stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    # Not a terminal (a log file, a pipe): wide enough that no table cell wraps or is cut short.
    width = None if stream.isatty() else 1000
    return Console(file=stream, soft_wrap=True, highlight=False, width=width)


class RunOutput:
    def __init__(self, console, *, verbose: bool = False, progress: bool = True):
        self.console = console
        self.verbose = verbose
        # Live displays only where a person watches: a terminal, and progress not switched off.
        self.live = bool(progress) and bool(getattr(console, "is_terminal", False))
        self.log_path: Path | None = None
        self._log = None
        self._saved: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._search: SearchTable | None = None
        self._started = time.monotonic()
        self._routed = False
        self._last_epoch: dict[str, int] = {}  # trial id -> its latest epoch shown

    # ---- the log --------------------------------------------------------------------------------

    def begin(self, log_path: Path, redirect: bool = True) -> None:
        """Open the run's log (appending: a resumed run keeps the earlier attempts' lines) and, with
        `redirect`, point the driver's descriptors 1 and 2 at it."""

        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
        self._log.write(f"\n===== driver pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S %Z')} =====\n")
        self.log_path = log_path
        if redirect and not self.verbose:
            for fd in (1, 2):
                try:
                    sys.stdout.flush() if fd == 1 else sys.stderr.flush()
                    self._saved.append((fd, os.dup(fd)))
                    os.dup2(self._log.fileno(), fd)
                except (OSError, ValueError):  # no such descriptor (an embedding host): leave it
                    pass

    def relocate(self, log_path: Path) -> None:
        """Move the log to `log_path` (the run's, once the run exists: a run refused before that leaves
        no folder behind), keeping what was written so far and the redirection."""
        log_path = Path(log_path)
        if self._log is None or log_path == self.log_path:
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._log.flush()
            new = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
            new.write(Path(self.log_path).read_text(encoding="utf-8", errors="replace"))
            new.flush()
            for fd, _saved in self._saved:
                os.dup2(new.fileno(), fd)
            old, self._log = self._log, new
            old.close()
            Path(self.log_path).unlink(missing_ok=True)
            try:
                Path(self.log_path).parent.rmdir()  # the temporary folder `begin` was given
            except OSError:
                pass
            self.log_path = log_path

    def attach_ray(self) -> None:
        """After the driver connected to Ray: worker lines to `worker_lines` (Ray's printer adds itself
        in `ray.init`, so this comes after it)."""
        from . import ray_compat

        if self._log is not None:
            ray_compat.route_worker_logs(self.worker_lines)
            self._routed = True

    def name_log(self) -> None:
        self.console.print(f"[dim]Ray's and the workers' output: {self.log_path}[/]")

    def end(self, failed: bool = False) -> None:
        """Give the descriptors back; on a failure, name the log (the detail is there)."""
        from . import ray_compat

        self._stop_search_table()
        if self._routed:
            ray_compat.route_worker_logs(None)
            self._routed = False
        for fd, saved in reversed(self._saved):
            try:
                os.dup2(saved, fd)
                os.close(saved)
            except OSError:
                pass
        self._saved.clear()
        if self._log is not None:
            try:
                self._log.close()
            except OSError:  # a full disk, say: the run's own error is the one to report, not the log's
                pass
            self._log = None
            if failed:
                self.console.print(f"Ray's and the workers' output of this run: {self.log_path}")

    def worker_lines(self, data: dict) -> None:
        """A batch of forwarded worker lines (Ray's dict: lines, pid, actor_name/task_name, is_err)."""
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')}) " if data.get("pid") not in ("autoscaler", "raylet") else ""
        for raw in data.get("lines", []):
            line = strip_ansi(raw)
            if line.startswith(TAG):
                try:
                    self.event(json.loads(line[len(TAG):]))
                except ValueError:
                    pass
                continue
            with self._lock:
                if self._log is not None:
                    try:
                        self._log.write(prefix + line + "\n")
                    except OSError:  # the log's disk is full: the run's own checks say so where it matters
                        pass
            if self.verbose:
                self.console.print(prefix + line, markup=False, highlight=False)

    # ---- the project's own lines ------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.print(text)

    def event(self, ev: dict) -> None:
        """A progress event of a stage: printed as one line, or shown in the live search table."""
        kind = ev.get("kind")
        if kind == "search_epoch" and ev.get("trial_id"):
            self._last_epoch[ev["trial_id"]] = max(self._last_epoch.get(ev["trial_id"], 0), int(ev.get("epoch") or 0))
        if kind == "search_end":
            self._await_epochs(ev.get("trials") or {})
        if kind == "search_epoch" and self.live:
            if self._search is None:
                self._search = SearchTable(self.console)
            self._search.update(ev)
            return
        if kind == "search_end":
            self._stop_search_table()
        line = progress_line(ev)
        if line:
            with self._lock:
                self.console.print(line, markup=False, highlight=False)

    def _await_epochs(self, trials: dict, timeout_s: float = 3.0) -> None:
        """Tune hands the driver a trial's result before Ray's log monitor forwards the trial's last
        progress line: wait (briefly) for the last epoch of each trial seen in this attempt, so that
        the lines come in their order."""
        end = time.monotonic() + timeout_s
        waiting = {t: e for t, e in trials.items() if t in self._last_epoch and e}
        while time.monotonic() < end and any(self._last_epoch.get(t, 0) < e for t, e in waiting.items()):
            time.sleep(0.05)

    def _stop_search_table(self) -> None:
        if self._search is not None:
            self._search.stop()
            self._search = None

    def stage_start(self, name: str) -> None:
        if self.live:
            self.console.rule(f"[bold]{name}")
        else:
            self.console.print(f"== {name} ==", markup=False)

    def stage_done(self, name: str, seconds: float) -> None:
        self._stop_search_table()
        self.console.print(f"{name}: done in {duration(seconds)}", markup=False)

    def total(self) -> float:
        return time.monotonic() - self._started


def _num(x, spec: str = ".3f") -> str:
    return "-" if not isinstance(x, (int, float)) or x != x else format(x, spec)


def _costs(ev: dict) -> str:
    costs = ev.get("cost_over_budget") or {}
    return ", ".join(f"{hw} {_num(v, '.2f')}" for hw, v in costs.items()) or "-"


def trial_name(ev: dict) -> str:
    return f"{ev.get('targets')} budget {ev.get('budget'):g} seed {ev.get('seed')}" if isinstance(
        ev.get("budget"), (int, float)) else str(ev.get("targets"))


def progress_line(ev: dict) -> str | None:
    """The plain line of one progress event (None: the event has no line of its own)."""
    kind = ev.get("kind")
    if kind == "train_epoch":  # the original's training or a fine-tune, from the rank-0 worker
        val = f", val top-1 {_num(ev.get('val_top1'))}" if ev.get("val_top1") is not None else ""
        return (f"{ev.get('stage', 'train')} {ev.get('job')}: epoch {ev.get('epoch')}/{ev.get('epochs')}, "
                f"loss {_num(ev.get('train_loss'), '.4f')}, train top-1 {_num(ev.get('train_top1'))}{val}")
    if kind == "search_epoch":
        return (f"search {trial_name(ev)}: epoch {ev.get('epoch')}/{ev.get('epochs')}, held-out acc "
                f"{_num(ev.get('heldout_acc'))}, expected cost / budget {_costs(ev)}")
    if kind == "search_trial_done":
        status = ev.get("status", "done")
        if status == "done":
            return (f"search {trial_name(ev)}: done, the selected ranks' held-out acc {_num(ev.get('heldout_acc'))}, "
                    f"predicted cost / budget {_costs(ev)}")
        return f"search {trial_name(ev)}: {status}" + (f" ({ev['error']})" if ev.get("error") else "")
    if kind == "search_start":
        return f"search: {ev.get('trials')} trial(s), {ev.get('epochs')} epoch(s) each"
    if kind == "profile_rows":
        eta = ev.get("eta_s")
        eta_text = f", about {duration(eta)} left" if isinstance(eta, (int, float)) and eta > 0 else ""
        return (f"profile {ev.get('hardware')}: {ev.get('done')}/{ev.get('total')} rows "
                f"({_num(ev.get('rate'), '.1f')} rows/s{eta_text})")
    if kind == "validate":
        return f"validate {ev.get('what')}"
    if kind == "message":
        return str(ev.get("text"))
    return None


class SearchTable:
    """A live table of the search's trials (a terminal only): one row per trial, its latest epoch."""

    def __init__(self, console):
        from rich.live import Live

        self.rows: dict[str, dict] = {}
        self.live = Live(self._table(), console=console, refresh_per_second=4, transient=False)
        self.live.start()

    def _table(self):
        from rich.table import Table

        t = Table(title="search trials", expand=False)
        for col in ("hardware", "budget", "seed", "epoch", "held-out acc", "expected cost / budget"):
            t.add_column(col, no_wrap=True)
        for ev in self.rows.values():
            t.add_row(str(ev.get("targets")), _num(ev.get("budget"), "g"), str(ev.get("seed")),
                      f"{ev.get('epoch')}/{ev.get('epochs')}", _num(ev.get("heldout_acc")), _costs(ev))
        return t

    def update(self, ev: dict) -> None:
        self.rows[str(ev.get("trial_id") or trial_name(ev))] = ev
        self.live.update(self._table())

    def stop(self) -> None:
        self.live.stop()
