"""Which Redis error replies are the server's trouble, not the batch's (pure logic)."""

from __future__ import annotations

import pytest
import redis

from memberpulse.streams.state.store import infrastructure_fault

_SCRIPT = "Error running script (call to f_1): @user_script:1: @user_script: 1: -{} {}"


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.OutOfMemoryError("command not allowed", status_code="OOM"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.ResponseError(_SCRIPT.format("OOM", "command not allowed")),  # 6.2
        redis.exceptions.ResponseError(_SCRIPT.format("READONLY", "You can't write")),
        redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
        redis.exceptions.ResponseError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.ResponseError("Redis is busy running a script", status_code="BUSY"),
        redis.exceptions.ClusterError("TTL exhausted."),  # the cluster client gave up
    ],
)
def test_a_server_that_cannot_serve_now_is_an_infrastructure_fault(error: Exception) -> None:
    assert infrastructure_fault(error)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ResponseError("state key mp:{x}:s holds another member"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
        redis.exceptions.ResponseError(_SCRIPT.format("ERR", "decision state of 9000 bytes")),
        redis.exceptions.ResponseError("a member called BOOM -OOMPH"),
        ValueError("OOM command not allowed"),  # not a Redis reply at all
    ],
)
def test_an_error_about_the_batch_itself_is_not(error: Exception) -> None:
    assert not infrastructure_fault(error)
