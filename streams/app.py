"""Where the worker lived before the layout of issue #22: `memberpulse.streams.app` stays
importable for deployments and scripts that name it. The code is in `streams/worker/app.py`.
"""

from memberpulse.streams.worker.app import (
    Worker,
    check_input_partitions,
    faust_options,
    poll_records,
    stream_buffer_items,
)

__all__ = [
    "Worker",
    "check_input_partitions",
    "faust_options",
    "poll_records",
    "stream_buffer_items",
]
