"""Timestamp alignment across co-partitioned topics (pure logic)."""

from __future__ import annotations

from memberpulse.streams.worker.align import TimeAligner
from memberpulse.streams.worker.records import InRecord

TOPICS = ("clicks", "browses", "purchases")


def _item(
    topic: str, offset: int, ts: int, handle: object, partition: int = 0
) -> tuple[InRecord, int, object]:
    return InRecord(topic, partition, offset, b"m", b"{}", ts), ts, handle


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _aligner(clock: _Clock | None = None, idle_ms: float = 500) -> TimeAligner[object]:
    return TimeAligner(TOPICS, idle_ms=idle_ms, clock=clock or _Clock())


def _behind(_topic: str, _partition: int, _offset: int) -> bool:
    return False  # every partition has more to read


def _caught_up(_topic: str, _partition: int, _offset: int) -> bool:
    return True


def test_a_topic_running_ahead_waits_for_the_others() -> None:
    aligner = _aligner()
    # clicks delivered a whole day; purchases only its first hour so far; browses nothing
    aligner.add(_item("clicks", i, i * 100, i) for i in range(10))
    aligner.add([_item("purchases", 0, 150, 100)])
    assert aligner.release(_behind) == []  # browses may still deliver ts 0
    aligner.add([_item("browses", 0, 320, 200)])
    released = aligner.release(_behind)
    # frontier = min(900, 320, 150) = 150: clicks 0, 100 and the purchase at 150
    assert [(r.topic, ts) for r, ts, _ in released] == [
        ("clicks", 0),
        ("clicks", 100),
        ("purchases", 150),
    ]
    assert aligner.held == 9  # clicks 200…900 and the browse at 320


def test_released_records_leave_in_event_time_order() -> None:
    aligner = _aligner()
    aligner.add([_item("clicks", 0, 300, "a"), _item("clicks", 1, 500, "b")])
    aligner.add([_item("purchases", 0, 400, "c"), _item("purchases", 1, 600, "d")])
    aligner.add([_item("browses", 0, 450, "e"), _item("browses", 1, 900, "f")])
    assert [h for _, _, h in aligner.release(_behind)] == ["a", "c", "e", "b"]  # frontier 500


def test_a_late_record_never_overtakes_the_records_before_it_in_its_partition() -> None:
    # clicks offset 2 is a late event (ts 100, behind offsets 0 and 1): the state layer
    # would take offsets 0 and 1 for redeliveries if it came first
    aligner = _aligner()
    aligner.add([_item("clicks", 0, 300, "c0"), _item("clicks", 1, 350, "c1")])
    aligner.add([_item("clicks", 2, 100, "c2"), _item("clicks", 3, 400, "c3")])
    aligner.add([_item("purchases", 0, 320, "p0"), _item("purchases", 1, 450, "p1")])
    aligner.add([_item("browses", 0, 500, "b0")])
    released = aligner.release(_behind)  # frontier: min(400, 450, 500)
    assert [r.offset for r, _, _ in released if r.topic == "clicks"] == [0, 1, 2, 3]
    # merged by the heads' timestamps: p0 (320) goes between c0 (300) and c1 (350)
    assert [h for _, _, h in released] == ["c0", "p0", "c1", "c2", "c3"]


def test_records_forced_out_keep_their_partitions_offset_order() -> None:
    aligner = TimeAligner(TOPICS, idle_ms=500, clock=_Clock(), max_held=1)
    aligner.add([_item("clicks", 0, 300, "c0"), _item("clicks", 1, 100, "c1")])
    aligner.add([_item("clicks", 2, 200, "c2")])
    released = aligner.release(_behind)  # nothing is due: the other topics never delivered
    assert [r.offset for r, _, _ in released] == [0, 1]
    assert aligner.held == 1


def test_a_caught_up_partition_stops_holding_the_others_once_quiet() -> None:
    clock = _Clock()
    aligner = _aligner(clock, idle_ms=500)
    aligner.add([_item("clicks", 0, 100, 1), _item("purchases", 0, 50, 2)])
    assert aligner.release(_caught_up) == []  # caught up, but quiet for 0 s only
    clock.now = 0.6
    assert [h for _, _, h in aligner.release(_caught_up)] == [2, 1]


def test_a_partition_behind_on_a_backlog_holds_however_long_it_is_quiet() -> None:
    clock = _Clock()
    aligner = _aligner(clock, idle_ms=500)
    aligner.add([_item("clicks", 0, 10_000, "late click")])
    for second in range(1, 8):  # slow deliveries (a busy worker), purchases/browses below
        clock.now = float(second) * 10
        aligner.add([_item("purchases", second, second * 10, f"p{second}")])
        aligner.add([_item("browses", second, second * 10, f"b{second}")])
        released = [h for _, _, h in aligner.release(_behind)]
        assert "late click" not in released  # clicks quiet for 70 s, but not caught up
        assert sorted(released) == [f"b{second}", f"p{second}"]


def test_caught_up_is_asked_per_topic_partition_with_its_last_offset() -> None:
    clock = _Clock()
    aligner = _aligner(clock, idle_ms=0)
    aligner.add([_item("clicks", 7, 100, "c"), _item("purchases", 3, 90, "p")])
    asked: list[tuple[str, int, int]] = []

    def only_browses_done(topic: str, partition: int, offset: int) -> bool:
        asked.append((topic, partition, offset))
        return topic == "browses"

    assert [h for _, _, h in aligner.release(only_browses_done)] == ["p"]
    assert set(asked) == {("clicks", 0, 7), ("browses", 0, -1), ("purchases", 0, 3)}


def test_partitions_are_aligned_independently() -> None:
    aligner = _aligner()
    for topic in TOPICS:
        aligner.add([_item(topic, 0, 100, f"{topic}0", partition=1)])
    aligner.add([_item("clicks", 0, 100, "p0", partition=0)])
    released = aligner.release(_behind)
    assert sorted(h for _, _, h in released) == ["browses0", "clicks0", "purchases0"]


def test_revoked_partitions_are_dropped_unprocessed() -> None:
    aligner = _aligner()
    aligner.add([_item("clicks", 0, 100, 1), _item("clicks", 1, 200, 2)])
    assert aligner.drop([("clicks", 0)]) == 2
    assert aligner.held == 0


def test_time_spent_processing_is_not_a_partitions_silence() -> None:
    clock = _Clock()
    aligner = _aligner(clock, idle_ms=500)
    aligner.add([_item("clicks", 0, 100, 1), _item("purchases", 0, 50, 2)])
    clock.now = 2.0
    aligner.note_busy(1.8)  # the worker was processing: nobody could deliver
    assert aligner.release(_caught_up) == []  # 0.2 s of free time only
    clock.now = 2.4
    assert [h for _, _, h in aligner.release(_caught_up)] == [2, 1]


def test_a_dead_letter_never_drags_its_partitions_frontier_forward() -> None:
    from memberpulse.streams.worker.records import NO_TS

    aligner = _aligner()
    aligner.add([_item("clicks", 0, 100, "c"), _item("browses", 0, 100, "b")])
    aligner.add([_item("purchases", 0, NO_TS, "dead letter"), _item("clicks", 1, 900, "c2")])
    released = [h for _, _, h in aligner.release(_behind)]
    assert released == ["dead letter"]  # purchases has delivered no event time yet
    aligner.add([_item("purchases", 1, 150, "p")])
    assert [h for _, _, h in aligner.release(_behind)] == ["c", "b"]  # frontier 100


def test_last_offset_tells_which_partitions_delivered_since_assignment() -> None:
    aligner = _aligner()
    assert aligner.last_offset("clicks", 0) == -1  # the worker asks the consumer's position
    aligner.add([_item("clicks", 41, 100, "c")])
    assert aligner.last_offset("clicks", 0) == 41
    aligner.drop([("clicks", 0)])
    assert aligner.last_offset("clicks", 0) == -1


def test_past_the_bound_the_earliest_records_are_released_anyway() -> None:
    aligner: TimeAligner[object] = TimeAligner(TOPICS, idle_ms=500, clock=_Clock(), max_held=4)
    aligner.add(_item("clicks", i, 100 + i, i) for i in range(4))
    aligner.add(_item("purchases", i, 50 + 10 * i, 10 + i) for i in range(3))
    # browses never delivered and are not caught up: nothing is due, but 7 > 4 are held
    released = aligner.release(_behind)
    assert [ts for _, ts, _ in released] == [50, 60, 70]  # the 3 earliest, in ts order
    assert aligner.held == 4
    assert aligner.forced == 3
    assert aligner.release(_behind) == []  # at the bound: held, as usual


def test_a_partition_that_stopped_delivering_stops_holding_the_others_back() -> None:
    clock = _Clock()
    aligner: TimeAligner[object] = TimeAligner(TOPICS, idle_ms=100, clock=clock, stall_s=5.0)
    aligner.add([_item("clicks", 0, 100, "a"), _item("browses", 0, 90, "b")])
    clock.now = 4.9
    assert aligner.release(_behind) == []  # purchases is behind (not caught up): it holds
    aligner.note_busy(2.0)  # time spent processing is no silence
    clock.now = 6.0
    assert aligner.release(_behind) == []  # 4.0 s of free time so far
    clock.now = 7.1
    # purchases stalled: skipped; browses (90) still bounds the frontier
    assert [h for _, _, h in aligner.release(_behind)] == ["b"]
    assert aligner.idle_skips["purchases"] == 1
    aligner.add([_item("purchases", 0, 400, "c"), _item("clicks", 1, 300, "d")])
    aligner.add([_item("browses", 1, 500, "e")])
    clock.now = 60.0  # long silent, but it delivered: behind means behind
    # frontier min(300, 500, 400) = 300
    assert [h for _, _, h in aligner.release(_behind)] == ["a", "d"]


def test_records_within_the_slack_of_the_frontier_go_out_at_once() -> None:
    aligner: TimeAligner[object] = TimeAligner(TOPICS, idle_ms=500, clock=_Clock(), slack_ms=50)
    aligner.add([_item("clicks", 0, 100, "a"), _item("clicks", 1, 200, "b")])
    aligner.add([_item("purchases", 0, 120, "c")])
    aligner.add([_item("browses", 0, 110, "d")])
    # frontier min(200, 120, 110) = 110, + 50 slack: everything up to 160 goes
    assert [h for _, _, h in aligner.release(_behind)] == ["a", "d", "c"]
    assert aligner.held == 1
