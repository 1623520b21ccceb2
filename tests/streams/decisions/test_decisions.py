"""Decisions are pure: snapshot + scores + decision state + event time → outputs and state."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from memberpulse.models.errors import ConfigError
from memberpulse.models.fold import fold
from memberpulse.models.snapshot import DecisionState, MemberSnapshot, StateSpec, day_of
from memberpulse.models.timeutil import MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE
from memberpulse.streams.decisions import (
    CHURN,
    COUPON,
    IDLE_CHECK,
    RECOMMENDATION,
    TIER,
    MemberScores,
    Policy,
    decide,
    decide_all,
    next_idle_check,
    output_id,
    tier_of,
)
from memberpulse.streams.decisions.coupons import CouponRules, load_rules, signals
from memberpulse.streams.settings import Settings
from tests.helpers import NOW_MS, make_event

MEMBER = "M0000001"


def _policy(**rules_overrides: object) -> Policy:
    rules = load_rules(None)
    if rules_overrides:
        rules = CouponRules.model_validate(rules.model_dump() | rules_overrides)
    return Policy.from_settings(Settings().decisions, rules)


def _snapshot(
    now: int = NOW_MS, purchases_days_ago: tuple[int, ...] = (40, 30, 20)
) -> MemberSnapshot:
    events = [
        make_event(event_id=f"p{d}", ts=now - d * MS_PER_DAY, item_id=f"I{d:05d}", price=30.0)
        for d in purchases_days_ago
    ]
    events.append(make_event(event_id="b", type="browse", ts=now - 10 * MS_PER_MINUTE, price=None))
    return fold(events, now, StateSpec())


REASONS = (("purchase_overdue", 0.21), ("not_seen_recently", 0.08), ("low_spend", 0.01))


def _scores(
    risk: float,
    spend: float = 50.0,
    items: tuple[str, ...] = ("A", "B", "C", "D"),
    reasons: tuple[tuple[str, float], ...] = REASONS,
) -> MemberScores:
    ranked = tuple((item, 1.0 - i / 10) for i, item in enumerate(items))
    return MemberScores(risk, spend, ranked, reasons)


def _kinds(decision: object) -> list[str]:
    return [out.kind for out in decision.outputs]  # type: ignore[attr-defined]


def test_churn_alert_fires_once_then_needs_rearming_below_the_rearm_threshold() -> None:
    policy = _policy(rules=load_rules(None).rules[:1])
    snap, state = _snapshot(), DecisionState()
    first = decide(MEMBER, snap, state, _scores(0.9), "e1", NOW_MS, policy, "v1")
    assert CHURN in _kinds(first)
    alert = next(o for o in first.outputs if o.kind == CHURN)
    assert alert.id == output_id(CHURN, MEMBER, 1)
    assert alert.payload["trigger"] == "e1"
    assert alert.payload["threshold"] == policy.alert_threshold
    assert first.state.armed is False
    # still high after the cooldown: no second alert, it was never re-armed
    later = NOW_MS + policy.churn_cooldown_ms + 1
    again = decide(MEMBER, snap, first.state, _scores(0.95), "e2", later, policy, "v1")
    assert CHURN not in _kinds(again)
    # dips between the thresholds: still disarmed; below re-arm: armed; up again: alert #2
    mid = decide(MEMBER, snap, again.state, _scores(0.6), "e3", later, policy, "v1")
    assert mid.state.armed is False
    low = decide(MEMBER, snap, mid.state, _scores(0.2), "e4", later, policy, "v1")
    assert low.state.armed is True
    second = decide(MEMBER, snap, low.state, _scores(0.8), "e5", later, policy, "v1")
    alert2 = next(o for o in second.outputs if o.kind == CHURN)
    assert alert2.id == output_id(CHURN, MEMBER, 2)
    assert alert2.payload["previous_risk"] == 0.2


def test_cooldown_holds_a_rearmed_alert_back() -> None:
    policy = _policy()
    snap = _snapshot()
    first = decide(MEMBER, snap, DecisionState(), _scores(0.9), "e1", NOW_MS, policy, "v1")
    rearmed = replace(first.state, armed=True)
    soon = NOW_MS + policy.churn_cooldown_ms // 2
    held = decide(MEMBER, snap, rearmed, _scores(0.9), "e2", soon, policy, "v1")
    assert CHURN not in _kinds(held)
    assert held.state.armed is True  # still armed: fires once the cooldown ends
    after = decide(
        MEMBER,
        snap,
        held.state,
        _scores(0.9),
        "e3",
        first.state.cooldown_until[CHURN],
        policy,
        "v1",
    )
    assert CHURN in _kinds(after)


def test_idle_check_alert_says_so_and_carries_the_models_reasons() -> None:
    policy = replace(_policy(), churn_reasons=2)
    silent_now = NOW_MS + 90 * MS_PER_DAY
    late = fold(
        [
            make_event(event_id=f"p{d}", ts=NOW_MS - d * MS_PER_DAY, price=30.0)
            for d in (40, 30, 20)
        ],
        silent_now,
        StateSpec(),
    )
    decision = decide(MEMBER, late, DecisionState(), _scores(0.9), None, silent_now, policy, "v1")
    alert = next(o for o in decision.outputs if o.kind == CHURN)
    assert alert.payload["trigger"] == IDLE_CHECK
    assert alert.payload["reasons"] == ["purchase_overdue", "not_seen_recently"]  # strongest 2
    assert alert.payload["reason_effects"] == {"purchase_overdue": 0.21, "not_seen_recently": 0.08}


def test_an_alert_without_the_models_reasons_is_refused() -> None:
    policy = _policy()
    with pytest.raises(ValueError, match="needs the model's reasons"):
        decide(MEMBER, _snapshot(), DecisionState(), _scores(0.99, reasons=()), None, NOW_MS,
               policy, "v1")  # fmt: skip


def test_recommendations_only_on_material_change_and_never_recent_purchases() -> None:
    policy = _policy()
    snap = _snapshot()
    bought = snap.recent_purchases[0]
    first = decide(
        MEMBER,
        snap,
        DecisionState(),
        _scores(0.1, items=(bought, "A", "B", "C")),
        "e1",
        NOW_MS,
        policy,
        "v1",
    )
    rec = next(o for o in first.outputs if o.kind == RECOMMENDATION)
    assert [i["item_id"] for i in rec.payload["items"]] == ["A", "B", "C"]
    later = NOW_MS + policy.rec_min_interval_ms
    # only the tail changed: not material
    same_head = decide(
        MEMBER,
        snap,
        first.state,
        _scores(0.1, items=("A", "B", "C", "Z")),
        "e2",
        later,
        policy,
        "v1",
    )
    assert RECOMMENDATION not in _kinds(same_head)
    # head changed but within the interval: held back, fingerprint kept for later
    soon = NOW_MS + 1
    held = decide(
        MEMBER, snap, first.state, _scores(0.1, items=("Z", "A", "B")), "e3", soon, policy, "v1"
    )
    assert RECOMMENDATION not in _kinds(held)
    assert held.state.recommendation_fingerprint == first.state.recommendation_fingerprint
    changed = decide(
        MEMBER, snap, held.state, _scores(0.1, items=("Z", "A", "B")), "e4", later, policy, "v1"
    )
    assert next(o for o in changed.outputs if o.kind == RECOMMENDATION).id == output_id(
        RECOMMENDATION, MEMBER, 2
    )


def _coupon_policy(**overrides: object) -> Policy:
    return _policy(**({"holdout_share": 0.0} | overrides))


def test_coupon_fires_for_an_at_risk_browser_reserves_budget_and_then_cools_down() -> None:
    policy = _coupon_policy()
    snap = _snapshot()
    values = signals(snap, 0.6, 150.0, 0.75)
    assert values["churn_risk_vs_alert"] == pytest.approx(0.8)
    assert values["minutes_since_intent"] == pytest.approx(10.0)
    decision = decide(
        MEMBER, snap, DecisionState(), _scores(0.6, spend=150.0), "e1", NOW_MS, policy, "v1"
    )
    coupon = next(o for o in decision.outputs if o.kind == COUPON)
    assert coupon.payload["rule"] == "save_at_risk_browser"
    assert coupon.payload["value_tier"] == "medium"
    assert decision.reservation is not None
    assert decision.reservation.id == coupon.id
    assert decision.reservation.amount == 1_000
    assert decision.reservation.day == day_of(NOW_MS)
    again = decide(
        MEMBER,
        snap,
        decision.state,
        _scores(0.6, spend=150.0),
        "e2",
        NOW_MS + MS_PER_HOUR,
        policy,
        "v1",
    )
    assert COUPON not in _kinds(again)


def test_no_coupon_without_budget_and_no_cooldown_started() -> None:
    policy = _coupon_policy()
    limit = round(policy.coupons.budget.daily_limit * 100)
    decision = decide(
        MEMBER,
        _snapshot(),
        DecisionState(),
        _scores(0.6, spend=150.0),
        "e1",
        NOW_MS,
        policy,
        "v1",
        limit - 1,
    )
    assert COUPON not in _kinds(decision)
    assert decision.reservation is None
    assert COUPON not in decision.state.cooldown_until


def test_a_batch_shares_the_days_budget() -> None:
    policy = _coupon_policy(budget={"name": "coupons", "daily_limit": 25.0})
    snap = _snapshot()
    members = {
        f"M{i}": (replace(snap, member_id=f"M{i}"), DecisionState(), _scores(0.6, spend=150.0), "e")
        for i in range(5)
    }
    decisions = decide_all(members, dict.fromkeys(members, NOW_MS), policy, "v1", {})
    granted = [d.reservation for d in decisions.values() if d.reservation is not None]
    assert len(granted) == 2  # 2 × 10 ≤ 25 < 3 × 10
    assert sum(r.amount for r in granted) <= 2_500


def test_holdout_members_get_a_holdout_record_and_spend_nothing() -> None:
    policy = _policy(holdout_share=1.0)
    decision = decide(
        MEMBER, _snapshot(), DecisionState(), _scores(0.6, spend=150.0), "e1", NOW_MS, policy, "v1"
    )
    coupon = next(o for o in decision.outputs if o.kind == COUPON)
    assert coupon.payload["holdout"] is True
    assert coupon.payload["value"] is None
    assert decision.reservation is None
    assert COUPON in decision.state.cooldown_until  # the control group is held to the same cadence


def test_holdout_share_is_deterministic_and_close_to_the_setting() -> None:
    rules = load_rules(None)
    members = [f"M{i:07d}" for i in range(20_000)]
    share = sum(rules.in_holdout(m) for m in members) / len(members)
    assert abs(share - rules.holdout_share) < 0.01
    # Stable across processes (so not Python's salted hash()) and rule objects: a member
    # never switches between holdout and treatment when a worker restarts.
    code = (
        "from memberpulse.streams.decisions.coupons import load_rules; r = load_rules(None); "
        "print(''.join('1' if r.in_holdout(f'M{i:07d}') else '0' for i in range(200)))"
    )
    elsewhere = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    again = load_rules(None)
    assert elsewhere == "".join("1" if again.in_holdout(m) else "0" for m in members[:200])
    other = CouponRules.model_validate(rules.model_dump() | {"holdout_salt": "another"})
    assert [rules.in_holdout(m) for m in members[:200]] != [
        other.in_holdout(m) for m in members[:200]
    ]


def test_tier_forecast_emitted_only_when_the_projection_changes() -> None:
    policy = _policy()
    snap = _snapshot()  # 3 purchases of 2 × 30 = 180 in the last 12 months
    first = decide(
        MEMBER, snap, DecisionState(), _scores(0.1, spend=10.0), "e1", NOW_MS, policy, "v1"
    )
    tier = next(o for o in first.outputs if o.kind == TIER)
    assert tier.payload["current_tier"] == "member"
    assert tier.payload["projected_tier"] == "member"
    assert tier.payload["trailing_12m_spend"] == 180.0
    assert tier.payload["partial_history"] is True
    same = decide(MEMBER, snap, first.state, _scores(0.1, spend=20.0), "e2", NOW_MS, policy, "v1")
    assert TIER not in _kinds(same)
    up = decide(MEMBER, snap, same.state, _scores(0.1, spend=100.0), "e3", NOW_MS, policy, "v1")
    moved = next(o for o in up.outputs if o.kind == TIER)
    assert (moved.payload["previous_projected_tier"], moved.payload["projected_tier"]) == (
        "member",
        "silver",
    )
    assert moved.id == output_id(TIER, MEMBER, 2)
    assert tier_of(2000.0, policy) == "platinum"


def test_next_idle_check_follows_the_members_own_purchase_rhythm() -> None:
    policy = _policy()
    snap = _snapshot(purchases_days_ago=(45, 25, 5))  # every 20 days, the last 5 days ago
    due = next_idle_check(snap, NOW_MS, policy)
    last = NOW_MS - 5 * MS_PER_DAY
    assert due == last + round(policy.idle_gap_multiple * 20 * MS_PER_DAY)
    # already overdue: re-check after the recheck span
    overdue_now = due + MS_PER_DAY
    assert next_idle_check(snap, overdue_now, policy) == overdue_now + policy.idle_recheck_ms


def test_equal_inputs_built_apart_give_the_same_decision_and_are_left_unchanged() -> None:
    def inputs() -> tuple[object, ...]:
        return (
            MEMBER,
            _snapshot(),
            DecisionState(),
            _scores(0.9, spend=150.0),
            "e1",
            NOW_MS,
            _policy(),
            "v1",
        )

    first, second = inputs(), inputs()
    decision = decide(*first)  # type: ignore[arg-type]
    assert decision.outputs  # a decision with something in it, not two empty ones
    assert decision == decide(*second)  # type: ignore[arg-type]
    assert first[2] == DecisionState()  # the stored state is not mutated in place


def test_rules_file_errors_name_the_problem(tmp_path: Path) -> None:
    text = (
        Path(__file__)
        .parents[3]
        .joinpath("streams", "decisions", "coupons.default.toml")
        .read_text()
    )
    bad = tmp_path / "rules.toml"
    bad.write_text(text.replace('signal = "churn_risk_vs_alert"', 'signal = "__import__"', 1))
    with pytest.raises(ConfigError, match="unknown signal '__import__'"):
        load_rules(bad)
    bad.write_text(text.replace('op = ">="', 'op = "=>"', 1))
    with pytest.raises(ConfigError, match="do not match the schema"):
        load_rules(bad)
    bad.write_text("rules = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_tier_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="tier_min_spend"):
        Settings(tier_names=("a", "b"), tier_min_spend=(0.0, 10.0, 20.0))


def test_the_shipped_schemas_match_the_code() -> None:
    import jsonschema

    from memberpulse.models.contract import Reason
    from memberpulse.streams.decisions import KINDS, REASON_CODES
    from tests.helpers import output_schema

    for kind in (*KINDS, "dlq"):
        jsonschema.Draft202012Validator.check_schema(output_schema(kind))
    assert set(output_schema("dlq")["properties"]["reason"]["enum"]) == {r.value for r in Reason}
    reasons = output_schema(CHURN)["properties"]["reasons"]["items"]["enum"]
    assert set(reasons) == set(REASON_CODES)


def test_decided_outputs_match_their_schemas() -> None:
    from tests.helpers import validate_record

    policy = _coupon_policy()
    decision = decide(
        MEMBER, _snapshot(), DecisionState(), _scores(0.9, spend=150.0), "e1", NOW_MS, policy, "v1"
    )
    assert {out.kind for out in decision.outputs} == {CHURN, RECOMMENDATION, COUPON, TIER}
    for out in decision.outputs:
        validate_record(orjson.loads(out.to_wire()))


def test_churn_thresholds_come_from_the_model_cards_risk_quantiles() -> None:
    from memberpulse.streams.decisions.policy import (
        FALLBACK_ALERT,
        FALLBACK_REARM,
        churn_thresholds,
    )

    card = {"churn_risk_percentiles": [i / 200 for i in range(1, 100)]}  # p_k = k / 200
    assert churn_thresholds(Settings().decisions, card) == (0.475, 0.375)  # p95, p75
    custom = Settings(churn_alert_quantile=0.9, churn_rearm_quantile=0.5)
    assert churn_thresholds(custom.decisions, card) == (0.45, 0.25)
    fixed = Settings(churn_alert_threshold=0.6, churn_rearm_threshold=0.4)
    assert churn_thresholds(fixed.decisions, card) == (0.6, 0.4)
    assert churn_thresholds(Settings().decisions, {}) == (FALLBACK_ALERT, FALLBACK_REARM)
    flat = {"churn_risk_percentiles": [0.3] * 99}  # a degenerate model: still hysteresis
    alert, rearm = churn_thresholds(Settings().decisions, flat)
    assert rearm < alert
    assert (
        Policy.from_settings(Settings().decisions, load_rules(None), card).alert_threshold == 0.475
    )


def test_churn_threshold_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="together"):
        Settings(churn_alert_threshold=0.6)
    with pytest.raises(ValueError, match="hysteresis"):
        Settings(churn_alert_threshold=0.5, churn_rearm_threshold=0.6)
    with pytest.raises(ValueError, match="churn_rearm_quantile"):
        Settings(churn_alert_quantile=0.5, churn_rearm_quantile=0.9)
