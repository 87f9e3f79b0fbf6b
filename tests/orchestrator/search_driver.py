"""A killable search driver for the tests: `python -m tests.orchestrator.search_driver --store S
--run-id R --spec-json J [--address A] [--trace-dir D] [--epoch-sleep-s N]` runs orchestrator.stages.search's
run_search in its own process (the tests SIGKILL it), with the tracing and sleeping callbacks."""
from __future__ import annotations

import argparse
import json
import sys

from orchestrator.run_layout import RunLayout


def main(argv=None) -> int:
    from orchestrator.ray_compat import enable_token_auth
    from orchestrator.stages.search import SearchSpec, run_search
    from tests.orchestrator.search_hooks import SleepAfterEpoch, TraceStarts

    p = argparse.ArgumentParser(prog="python -m tests.orchestrator.search_driver")
    p.add_argument("--store", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--spec-json", required=True, help="a SearchSpec as JSON")
    p.add_argument("--address", default=None)
    p.add_argument("--trace-dir", default=None)
    p.add_argument("--epoch-sleep-s", type=float, default=0.0)
    args = p.parse_args(argv)
    if args.address:
        enable_token_auth()
    callbacks = ([TraceStarts(args.trace_dir)] if args.trace_dir else []) + \
        ([SleepAfterEpoch(args.epoch_sleep_s)] if args.epoch_sleep_s else [])
    records = run_search(RunLayout(args.store, args.run_id), SearchSpec.from_dict(json.loads(args.spec_json)),
                         address=args.address, callbacks=callbacks)
    done = sum(r["status"] == "done" for r in records)
    print(f"search {args.run_id}: {done}/{len(records)} trials done")
    return 0 if done == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
