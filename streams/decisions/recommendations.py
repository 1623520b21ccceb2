"""The recommendation update: the model's top-K without recently bought items, emitted
when its first `rec_material_top` items changed, at most once per `rec_min_interval`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from memberpulse.models.snapshot import DecisionState, MemberSnapshot
from memberpulse.streams.decisions.policy import RECOMMENDATION, Emit, MemberScores, Policy

_FINGERPRINT_HEX: Final = 16


def recommendation(
    snapshot: MemberSnapshot,
    state: DecisionState,
    scores: MemberScores,
    now: int,
    policy: Policy,
    cooldowns: dict[str, int],
    emit: Emit,
) -> str | None:
    """Emit the list when its head changed materially; returns the fingerprint kept."""
    bought = set(snapshot.recent_purchases)
    items = [(item, score) for item, score in scores.items if item not in bought]
    if not items:
        return state.recommendation_fingerprint
    fingerprint = _fingerprint([item for item, _ in items[: policy.rec_material_top]])
    changed = fingerprint != state.recommendation_fingerprint
    if not changed or now < cooldowns.get(RECOMMENDATION, 0):
        return state.recommendation_fingerprint
    emit(
        RECOMMENDATION,
        {
            "items": [{"item_id": item, "score": round(score, 4)} for item, score in items],
            "excluded_recent_purchases": len(bought),
        },
    )
    cooldowns[RECOMMENDATION] = now + policy.rec_min_interval_ms
    return fingerprint


def _fingerprint(items: Sequence[str]) -> str:
    text = "\x00".join(items).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:_FINGERPRINT_HEX]
