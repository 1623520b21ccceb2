"""Pointing settings at the local stack recorded under MEMBERPULSE_HOME."""

from __future__ import annotations

from memberpulse.streams.local import stack
from memberpulse.streams.local.launcher import StackInfo
from memberpulse.streams.settings import Settings


def with_local_stack(settings: Settings) -> Settings:
    """`settings` aimed at the running local stack, for the endpoints not set explicitly.

    An explicit MEMBERPULSE_KAFKA_BOOTSTRAP / MEMBERPULSE_REDIS_URL (or `--set`) always wins.
    """
    alive = {
        name: record
        for name, record in stack.load_state(settings).items()
        if stack.is_alive(record)
    }
    if settings.is_set("kafka_bootstrap"):
        alive.pop(stack.KAFKA, None)
    if settings.is_set("redis_url"):
        alive.pop(stack.REDIS, None)
    return StackInfo(alive, already_running=True).apply_to(settings) if alive else settings
