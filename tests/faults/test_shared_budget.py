"""The coupon budget binds across two running workers (issue #25).

Two `memberpulse worker` processes in one group share the input partitions and one Redis;
every member wants a coupon, far more than the daily budget pays for. The budget is a
Redis reservation both workers draw on, so the coupons sent on each event-time day add up
to the limit and never past it, whichever worker decided them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from memberpulse.streams.decisions.coupons import load_rules
from memberpulse.streams.local.worker_process import WorkerProcess
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import read_from_start
from tests.faults.harness import (
    EXIT_DEADLINE_S,
    OwnRedis,
    SteadyLoad,
    check_conservation,
    committed_all,
    fault_settings,
    member_events,
    running_worker,
    timed,
)
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

_RATE = 400.0
_RULES = """
cooldown_days = 1
holdout_share = 0.2
holdout_salt = "two-workers"
[budget]
name = "coupons"
daily_limit = 40.0
[[value_tiers]]
name = "flat"
min_expected_spend = 0
value = 10.0
[[rules]]
name = "everyone"
when = [{ signal = "expected_spend", op = ">=", value = 0 }]
"""


def _refused(worker: WorkerProcess) -> int:
    return int(worker.metrics().total("memberpulse_coupons_refused_total"))


def _applied(worker: WorkerProcess) -> float:
    return worker.metrics().total("memberpulse_events_applied_total")


def test_two_workers_sharing_partitions_never_spend_past_the_daily_budget(
    isolated: Settings, registry: Path, own_redis: OwnRedis, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(_RULES)
    settings = fault_settings(isolated, registry, own_redis, coupon_rules=rules_file)
    rules = load_rules(rules_file)
    events = member_events(members=120, seed=71)
    with running_worker(settings, tmp_path / "first.log") as first:
        second = WorkerProcess(settings, tmp_path / "second.log")
        try:
            wait_until(second.ready, timeout=120, interval=0.2, what="second worker ready")
            load = SteadyLoad(settings, events, _RATE).start()
            sent = load.join()
            timed(lambda: committed_all(settings, sent), "every input committed")
            assert _applied(first) > 0  # both decided: the budget really was shared
            assert _applied(second) > 0
            refused = sum(_refused(w) for w in (first, second))
            assert second.stop(EXIT_DEADLINE_S) == 0
        finally:
            second.kill()
        assert first.stop(EXIT_DEADLINE_S) == 0

    kafka = settings.kafka
    coupons = [orjson.loads(m.value()) for m in read_from_start(kafka, [kafka.topic_coupons])]
    spent: Counter[str] = Counter()
    for coupon in coupons:
        if coupon["value"] is not None:
            spent[str(coupon["budget_day"])] += round(float(coupon["value"]) * 100)
    limit = round(rules.budget.daily_limit * 100)
    assert spent, "no coupon was sent"
    assert all(cents <= limit for cents in spent.values()), spent  # never overspent
    assert max(spent.values()) == limit  # demand exceeded the budget: it bound
    # Coupons refused at reservation (both workers read room, one reserved it first) come
    # only from a race between the two: some runs have none, so they are not required;
    # when there are, conservation below matches each to an unsent coupon episode.
    print(
        f"days {len(spent)}, bound on {sum(v == limit for v in spent.values())}; "
        f"outputs {check_conservation(settings, events, 0, refused)}"
    )
