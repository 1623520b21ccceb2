"""`memberpulse worker` (the Faust app) and `memberpulse tail TOPIC` (follow an output)."""

from __future__ import annotations

import signal
from typing import Annotated, Any, Final

import typer
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from memberpulse.streams.cli import context

_POLL_S: Final = 0.2


def worker(ctx: typer.Context) -> None:
    """Run the streaming worker: input topics → state → model → decisions → outputs."""
    from memberpulse.streams.local.stack import free_port
    from memberpulse.streams.worker.app import Worker

    settings = context.settings(ctx)
    if settings.worker.web_port == 0:
        settings = settings.model_copy(update={"worker_web_port": free_port()})
    Worker(settings).run()


def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to follow, e.g. member.churn-alerts.")],
    from_beginning: Annotated[
        bool, typer.Option(help="Start at the first record instead of the end.")
    ] = False,
    max_records: Annotated[
        int, typer.Option(min=0, help="Stop after this many records (0: follow forever).")
    ] = 0,
) -> None:
    """Print an output topic's records as JSON lines (assign(), no consumer group join)."""
    from memberpulse.streams.worker.kafka import client_config, partition_counts

    settings = context.settings(ctx)
    partitions = partition_counts(settings.kafka, [topic]).get(topic, 0)
    if not partitions:
        raise typer.BadParameter(f"no topic {topic!r} on {settings.kafka.bootstrap}")
    consumer = Consumer(
        client_config(settings.kafka)
        | {"group.id": "memberpulse-tail", "enable.auto.commit": False}
    )
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in range(partitions)])
    stopped = False

    def stop(*_args: Any) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    printed = 0
    try:
        while not stopped and (not max_records or printed < max_records):
            message = consumer.poll(_POLL_S)
            if message is None or message.error() is not None:
                continue
            value = message.value() or b""
            print(value.decode("utf-8", "replace"), flush=True)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def register(app: typer.Typer) -> None:
    """Attach the commands."""
    app.command("worker")(worker)
    app.command("tail")(tail)
