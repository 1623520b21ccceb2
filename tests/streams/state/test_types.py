"""Decision state encoding: a lossless, compact round trip."""

from __future__ import annotations

from memberpulse.models.snapshot import DecisionState
from memberpulse.streams.state.types import decode_decision, encode_decision


def test_decision_state_round_trips_every_field() -> None:
    state = DecisionState(
        last_risk=0.42,
        armed=False,
        episodes={"churn": 3, "coupon": 1},
        cooldown_until={"churn": 1_795_694_400_000},
        recommendation_fingerprint="a1b2c3d4e5f6",
        next_idle_check=1_795_694_400_123,
    )
    assert decode_decision(encode_decision(state)) == state
    assert decode_decision(encode_decision(DecisionState())) == DecisionState()
    assert decode_decision(None) == DecisionState()
    assert len(encode_decision(state)) < 100
