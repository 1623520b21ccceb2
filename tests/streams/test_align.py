"""Timestamp alignment across co-partitioned topics (pure logic)."""

from __future__ import annotations

from memberpulse.streams.align import TimeAligner
from memberpulse.streams.processor import InRecord

TOPICS = ("clicks", "browses", "purchases")


def _record(topic: str, offset: int, ts: int, partition: int = 0) -> InRecord:
    return InRecord(topic, partition, offset, b"m", b"{}", ts)


def _item(
    topic: str, offset: int, ts: int, handle: object, partition: int = 0
) -> tuple[InRecord, int, object]:
    return _record(topic, offset, ts, partition), ts, handle


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _never_caught_up(_topic: str, _partition: int, _offset: int) -> bool:
    return False


def _all_caught_up(_topic: str, _partition: int, _offset: int) -> bool:
    return True


def test_a_topic_running_ahead_waits_for_the_others() -> None:
    aligner: TimeAligner[object] = TimeAligner(TOPICS, max_hold_ms=10_000, clock=_Clock())
    # clicks delivered a whole day; purchases only its first hour so far; browses nothing
    aligner.add(_item("clicks", i, i * 100, i) for i in range(10))
    aligner.add([_item("purchases", 0, 150, 100)])
    assert aligner.release(_never_caught_up) == []  # browses may still deliver ts 0
    aligner.add([_item("browses", 0, 320, 200)])
    released = aligner.release(_never_caught_up)
    # frontier = min(900, 320, 150) = 150: clicks 0, 100 and the purchase at 150
    assert [(r.topic, ts) for r, ts, _ in released] == [
        ("clicks", 0),
        ("clicks", 100),
        ("purchases", 150),
    ]
    assert aligner.held == 9  # clicks 200…900 and the browse at 320


def test_caught_up_topics_do_not_hold_anything_back_and_output_is_in_time_order() -> None:
    aligner: TimeAligner[object] = TimeAligner(TOPICS, max_hold_ms=10_000, clock=_Clock())
    aligner.add([_item("clicks", 0, 300, "a"), _item("clicks", 1, 500, "b")])
    aligner.add([_item("purchases", 0, 400, "c")])

    def only_browses_idle(topic: str, _partition: int, _offset: int) -> bool:
        return topic == "browses"

    released = aligner.release(only_browses_idle)  # frontier = min(500, 400) = 400
    assert [h for _, _, h in released] == ["a", "c"]
    assert [h for _, _, h in aligner.release(_all_caught_up)] == ["b"]
    assert aligner.held == 0


def test_partitions_are_aligned_independently() -> None:
    aligner: TimeAligner[object] = TimeAligner(TOPICS, max_hold_ms=10_000, clock=_Clock())
    aligner.add([_item("clicks", 0, 100, 1, partition=0)])
    aligner.add([_item("clicks", 0, 100, 2, partition=1)])

    def partition_1_idle(_topic: str, partition: int, _offset: int) -> bool:
        return partition == 1

    assert [h for _, _, h in aligner.release(partition_1_idle)] == [2]


def test_a_record_held_too_long_is_released_anyway() -> None:
    clock = _Clock()
    aligner: TimeAligner[object] = TimeAligner(TOPICS, max_hold_ms=2_000, clock=clock)
    aligner.add([_item("clicks", 0, 100, 1)])
    clock.now = 1.0
    assert aligner.release(_never_caught_up) == []
    clock.now = 2.5
    assert [h for _, _, h in aligner.release(_never_caught_up)] == [1]


def test_revoked_partitions_are_dropped_unprocessed() -> None:
    aligner: TimeAligner[object] = TimeAligner(TOPICS, max_hold_ms=2_000, clock=_Clock())
    aligner.add([_item("clicks", 0, 100, 1), _item("clicks", 1, 200, 2)])
    assert aligner.drop([("clicks", 0)]) == 2
    assert aligner.held == 0
