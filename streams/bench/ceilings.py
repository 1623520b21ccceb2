"""The two Faust ceilings `memberpulse bench e2e` compares the worker with.

Run as a child process (`python -m memberpulse.streams.bench.ceilings MODE EXPECTED [TOPIC]`),
configured like the worker through MEMBERPULSE_* variables, with the same Faust options
(`app.faust_options`), over the same input topics:

- `consume`: a bare agent that only decodes (orjson) and counts each event, taking
  micro-batches as the worker does (`take(batch_max_size, within=batch_max_wait_ms)`).
  No Faust agent doing real work can consume faster than this.
- `forward`: the naive pattern, a bare agent that forwards each event with
  `await topic.send(...)` to TOPIC.

When EXPECTED events were handled (forwarded ones flushed), it prints one JSON line
(`events`, `seconds` from the first event to the last, `eps`) and exits at once: the
measurement is over, its consumer group is thrown away, nothing is left to commit.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Final

import faust
import orjson

from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.app import faust_options
from memberpulse.streams.worker.delivery import use_stock_transport
from memberpulse.streams.worker.kafka import fetch_max_wait_ms

CONSUME: Final = "consume"
FORWARD: Final = "forward"
_MS: Final = 1000.0


class _Clock:
    """First and last event times of a run, and the count in between."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first: float | None = None

    def start(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def report(self) -> None:
        seconds = time.perf_counter() - (self.first or time.perf_counter())
        line = {"events": self.count, "seconds": seconds, "eps": self.count / seconds}
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        os._exit(0)  # the run is measured; a throw-away group has nothing to commit


def build(settings: Settings, mode: str, expected: int, forward_to: str = "") -> faust.App:
    """The ceiling agent's app."""
    app = faust.App(
        settings.worker.group_id,
        web_enabled=False,
        stream_wait_empty=False,
        **faust_options(settings),
    )
    # Faust's own per-message consumer, with the worker's fetch wait (like for like).
    use_stock_transport(app, fetch_max_wait_ms(settings.kafka))
    inputs = app.topic(*settings.kafka.input_topics, value_serializer="raw", key_serializer="raw")
    clock = _Clock(expected)

    if mode == CONSUME:
        within = settings.worker.batch_max_wait_ms / _MS

        @app.agent(inputs, name="ceiling-consume")
        async def consume(stream: Any) -> None:
            async for values in stream.take(settings.worker.batch_max_size, within=within):
                clock.start()
                for value in values:
                    orjson.loads(value)
                clock.count += len(values)
                if clock.count >= expected:
                    clock.report()

    elif mode == FORWARD:
        out = app.topic(forward_to, value_serializer="raw", key_serializer="raw")

        @app.agent(inputs, name="ceiling-forward")
        async def forward(stream: Any) -> None:
            async for event in stream.events():
                clock.start()
                orjson.loads(event.value)
                await out.send(key=event.key, value=event.value)
                clock.count += 1
                if clock.count >= expected:
                    await app.producer.flush()
                    clock.report()

    else:
        raise SystemExit(f"mode must be {CONSUME} or {FORWARD}, not {mode!r}")
    return app


def main(argv: list[str]) -> None:
    """`python -m memberpulse.streams.bench.ceilings MODE EXPECTED [TOPIC]`."""
    mode, expected = argv[0], int(argv[1])
    forward_to = argv[2] if len(argv) > 2 else ""
    if mode == FORWARD and not forward_to:
        raise SystemExit("forward needs the topic to forward to")
    app = build(Settings(), mode, expected, forward_to)
    worker = faust.Worker(app, loglevel="warning", redirect_stdouts=False, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
