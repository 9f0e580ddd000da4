"""A small sampling profiler: where a whole process spends its wall time, by the functions we care about.

    python bench/sampler.py OUT.json --focus ingestion/ -m ingestion run --config …

Every 5 ms a thread looks at every other thread's Python stack and charges the sample to the innermost
frame whose file path contains a `--focus` string (the function that called DuckDB, Spark or the
network). Threads blocked in thread-pool plumbing (waiting for other threads) are not counted, so
parallel tables add up to the busy time, not wall time × threads. Unlike cProfile it does not slow the
Python code it watches, and it sees time spent inside C extensions and the JVM (charged to the caller).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import threading
import time
from collections import Counter

_IDLE = ("/threading.py", "/concurrent/futures/", "/queue.py", "/selectors.py")
INTERVAL = 0.005


def _label(frame, focus: tuple[str, ...], main: bool) -> str | None:  # type: ignore[no-untyped-def]
    """The sample's label, or None for an idle thread (a helper thread outside the focus is idle: py4j's
    and the JVM's output readers sit blocked on a socket or pipe)."""
    leaf = frame
    if any(p in leaf.f_code.co_filename for p in _IDLE):
        return None
    while frame is not None:
        path = frame.f_code.co_filename
        if any(p in path for p in focus):
            short = path.split("/site-packages/")[-1].split("/work/")[-1]
            return f"{short.rsplit('/', 2)[-2] + '/' if '/' in short else ''}{short.rsplit('/', 1)[-1]}:{frame.f_code.co_qualname if hasattr(frame.f_code, 'co_qualname') else frame.f_code.co_name}"
        frame = frame.f_back
    return "(other: imports, start-up, libraries)" if main else None


class Sampler(threading.Thread):
    def __init__(self, focus: tuple[str, ...]) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.focus, self.counts, self.samples = focus, Counter[str](), 0
        self.stopped = threading.Event()

    def run(self) -> None:
        me, main = threading.get_ident(), threading.main_thread().ident
        while not self.stopped.wait(INTERVAL):
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                label = _label(frame, self.focus, tid == main)
                if label is not None:
                    self.counts[label] += 1
                    self.samples += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out")
    parser.add_argument("--focus", action="append", default=[])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("-m", dest="module", help="run this module as __main__ (like python -m)")
    what.add_argument("--script", help="run this script as __main__")
    args, rest = parser.parse_known_args()
    sampler = Sampler(tuple(args.focus) or ("ingestion/",))
    sys.argv = [args.module or args.script, *rest]
    start = time.perf_counter()
    sampler.start()
    code = 0
    try:
        if args.module:
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))
            runpy.run_path(args.script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sampler.stopped.set()
        sampler.join()
        wall = time.perf_counter() - start
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "wall_s": wall,
                    "interval_s": INTERVAL,
                    "samples": sampler.samples,
                    "by_function": dict(sampler.counts),
                },
                fh,
                indent=1,
            )
    sys.exit(code)


if __name__ == "__main__":
    main()
