"""orchestrator.run_output: worker lines to the run's log, progress lines to the console, plain lines
that a log file keeps whole; the descriptors given back. (The whole pipeline's terminal output is
checked in tests/pipelines/test_pipeline_demo.py.)"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

from rich.console import Console

from orchestrator.run_output import RunOutput, duration, progress_line, strip_ansi
from orchestrator.stages.profiling import PlainProgress
from workers.progress import TAG


def plain_console():
    buf = io.StringIO()
    return Console(file=buf, width=1000, soft_wrap=True), buf


def test_worker_lines_go_to_the_log_and_progress_lines_to_the_console(tmp_path):
    console, buf = plain_console()
    out = RunOutput(console, progress=False)
    out.begin(tmp_path / "tmp" / "driver.log", redirect=False)
    event = {"kind": "train_epoch", "stage": "fine-tune", "job": "asic-b0.5-with-a-long-config-id", "epoch": 1,
             "epochs": 3, "train_loss": 1.25, "train_top1": 0.5, "val_top1": 0.25}
    out.worker_lines({"pid": 42, "actor_name": "RayTrainWorker", "is_err": False,
                      "lines": ["\x1b[36mCheckpoint successfully created at: Checkpoint(x)\x1b[0m",
                                TAG + json.dumps(event)]})
    out.relocate(tmp_path / "run" / "logs" / "driver.log")
    out.worker_lines({"pid": 43, "task_name": "measure", "is_err": True, "lines": ["after the move"]})
    out.end()
    shown = buf.getvalue()
    assert "Checkpoint successfully" not in shown and "pid=" not in shown
    assert "fine-tune asic-b0.5-with-a-long-config-id: epoch 1/3, loss 1.2500, train top-1 0.500, val top-1 0.250" \
        in shown
    log = (tmp_path / "run" / "logs" / "driver.log").read_text()
    assert "(RayTrainWorker pid=42) Checkpoint successfully created at: Checkpoint(x)\n" in log
    assert "(measure pid=43) after the move" in log and "\x1b[" not in log and TAG not in log
    assert not (tmp_path / "tmp").exists()  # the temporary log moved into the run


def test_verbose_shows_worker_lines_on_the_console_too(tmp_path):
    console, buf = plain_console()
    out = RunOutput(console, verbose=True, progress=False)
    out.begin(tmp_path / "driver.log", redirect=False)
    out.worker_lines({"pid": 7, "actor_name": "TrainController", "is_err": True, "lines": ["Requesting resources"]})
    out.end()
    assert "(TrainController pid=7) Requesting resources" in buf.getvalue()


def test_redirect_sends_the_descriptors_to_the_log_and_gives_them_back(tmp_path):
    """In a child process: what is written to descriptors 1 and 2 (as Ray's C++ core does) lands in the
    log while the run works; the console (a duplicate of stderr taken first) still reaches stderr;
    after `end`, descriptor 2 is the terminal's again and the failure names the log."""
    log = tmp_path / "driver.log"
    script = textwrap.dedent(f"""
        import os, sys
        from orchestrator.run_output import RunOutput, terminal_console
        out = RunOutput(terminal_console(), progress=False)
        out.begin({str(log)!r})
        os.write(2, b"core_worker.cc: an error-level line\\n")
        os.write(1, b"Tune box\\n")
        print("python stderr", file=sys.stderr, flush=True)
        out.say("the project's own line")
        out.end(failed=True)
        os.write(2, b"after end\\n")
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "core_worker" not in proc.stderr and "Tune box" not in proc.stdout and "python stderr" not in proc.stderr
    assert "the project's own line" in proc.stderr and "after end" in proc.stderr
    assert f"Ray's and the workers' output of this run: {log}" in proc.stderr
    text = log.read_text()
    assert "core_worker.cc: an error-level line" in text and "Tune box" in text and "python stderr" in text


def test_plain_progress_lines_are_complete_and_bounded():
    said = []
    bar = PlainProgress(said.append, every_s=1e9)
    task = bar.add_task("cpu", total=95)
    for _ in range(95):
        bar.advance(task, 1)
    lines = [progress_line(e) for e in said]
    assert lines[0] == "profile cpu: 0/95 rows (- rows/s)"
    assert lines[-1].startswith("profile cpu: 95/95 rows (") and "left" not in lines[-1]
    assert 10 <= len(lines) <= 12  # start, every tenth, the end: not a line per row


def test_progress_lines_name_the_whole_trial():
    ev = {"kind": "search_epoch", "targets": "cpu+asic", "budget": 0.5, "seed": 2, "epoch": 3, "epochs": 10,
          "heldout_acc": 0.4321, "cost_over_budget": {"cpu": 1.04, "asic": 0.97}}
    assert progress_line(ev) == ("search cpu+asic budget 0.5 seed 2: epoch 3/10, held-out acc 0.432, "
                                 "expected cost / budget cpu 1.04, asic 0.97")
    assert progress_line({"kind": "search_epoch", "targets": "cpu", "budget": 0.9, "seed": 0, "epoch": 1,
                          "epochs": 2, "heldout_acc": None, "cost_over_budget": {}}).endswith(
        "held-out acc -, expected cost / budget -")
    assert progress_line({"kind": "unknown"}) is None


def test_duration_and_ansi():
    assert duration(12.34) == "12.3 s" and duration(245) == "4 min 05 s" and duration(3720) == "1 h 02 min"
    assert strip_ansi("\x1b[36m(pid=1)\x1b[0m x") == "(pid=1) x"


def test_a_terminal_gets_a_live_table_of_the_search_trials():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    out = RunOutput(console, progress=True)
    assert out.live
    for seed in (0, 1):
        for epoch in (1, 2):
            out.event({"kind": "search_epoch", "trial_id": f"t{seed}", "targets": "cpu", "budget": 0.6, "seed": seed,
                       "epoch": epoch, "epochs": 2, "heldout_acc": 0.5 + epoch / 10, "cost_over_budget": {"cpu": 0.9}})
    assert out._search is not None and len(out._search.rows) == 2  # one row per trial, its latest epoch
    out.event({"kind": "search_end"})
    assert out._search is None
    shown = strip_ansi(buf.getvalue())
    assert "search trials" in shown and "2/2" in shown and "0.700" in shown and "cpu 0.90" in shown
    assert "search cpu budget" not in shown  # no plain lines beside the table


def test_no_progress_on_a_terminal_prints_plain_lines():
    buf = io.StringIO()
    out = RunOutput(Console(file=buf, force_terminal=True, width=120), progress=False)
    out.event({"kind": "search_epoch", "trial_id": "t0", "targets": "cpu", "budget": 0.6, "seed": 0, "epoch": 1,
               "epochs": 2, "heldout_acc": None, "cost_over_budget": {"cpu": 1.0}})
    assert "search cpu budget 0.6 seed 0: epoch 1/2" in strip_ansi(buf.getvalue())


def test_a_finished_trial_names_its_selected_ranks_accuracy_and_cost():
    line = progress_line({"kind": "search_trial_done", "targets": "asic", "budget": 0.6, "seed": 1, "status": "done",
                          "error": None, "heldout_acc": 0.353, "cost_over_budget": {"asic": 0.98}})
    assert line == ("search asic budget 0.6 seed 1: done, the selected ranks' held-out acc 0.353, "
                    "predicted cost / budget asic 0.98")
    failed = progress_line({"kind": "search_trial_done", "targets": "cpu", "budget": 0.6, "seed": 0,
                            "status": "error", "error": "RuntimeError: boom"})
    assert failed == "search cpu budget 0.6 seed 0: error (RuntimeError: boom)"


def test_the_search_end_waits_for_each_trials_last_progress_line(tmp_path):
    """Tune returns a trial's result before Ray forwards the trial's last line: the end of the search
    waits for it (briefly), so "done" comes after the trial's last epoch."""
    import threading
    import time

    console, buf = plain_console()
    out = RunOutput(console, progress=False)
    out.begin(tmp_path / "driver.log", redirect=False)

    def epoch(n):
        return TAG + json.dumps({"kind": "search_epoch", "trial_id": "t0", "targets": "cpu", "budget": 0.5, "seed": 0,
                                 "epoch": n, "epochs": 2, "heldout_acc": 0.5, "cost_over_budget": {"cpu": 1.0}})

    out.worker_lines({"pid": 1, "lines": [epoch(1)]})
    late = threading.Thread(target=lambda: (time.sleep(0.3), out.worker_lines({"pid": 1, "lines": [epoch(2)]})))
    late.start()
    out.event({"kind": "search_end", "trials": {"t0": 2, "finished-earlier": 5}})
    out.say("search: done")
    late.join()
    out.end()
    shown = buf.getvalue()
    assert shown.index("epoch 2/2") < shown.index("search: done")
