"""Which records a worker may still process across a rebalance (pure logic)."""

from memberpulse.streams.worker.app import _fresh


def test_records_of_the_current_generation_are_processed() -> None:
    assert _fresh(fetched_in=3, current=3, revoking=False)


def test_the_first_generation_numbered_zero_is_processed() -> None:
    assert _fresh(fetched_in=0, current=0, revoking=False)


def test_records_fetched_before_the_last_assignment_are_left_for_the_next_owner() -> None:
    assert not _fresh(fetched_in=2, current=3, revoking=False)


def test_between_a_revocation_and_the_next_assignment_no_record_is_processed() -> None:
    assert not _fresh(fetched_in=3, current=3, revoking=True)


def test_a_record_without_a_generation_is_not_processed() -> None:
    assert not _fresh(fetched_in=None, current=1, revoking=False)
