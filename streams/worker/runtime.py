"""Process-wide runtime settings of a long-running MemberPulse process."""

from __future__ import annotations

import gc

from memberpulse.streams.settings import WorkerSettings


def tune_gc(worker: WorkerSettings) -> None:
    """Apply `worker_gc_gen0_threshold`, once start-up is done and before the first batch.

    Every batch allocates many short-lived, acyclic containers (snapshots, feature
    columns); with Python's default threshold of 700 they trigger young collections, and
    the older generations' passes then walk everything alive, models and libraries
    included. `gc.freeze()` moves what start-up loaded out of the collector's sight, and
    a higher threshold makes the passes rarer. Figures: BENCHMARKS.md.
    """
    threshold = worker.gc_gen0_threshold
    if not threshold:  # 0: leave Python's defaults
        return
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
