"""End to end: simulate → train a tiny model → evaluate it, through the CLI (time reported)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memberpulse.models.bundle import METRICS_FILE, load_bundle
from memberpulse.models.config import DatasetConfig, NetworkConfig, SASRecConfig, TrainConfig
from memberpulse.models.evaluate import evaluate
from memberpulse.models.eventlog import load_events
from memberpulse.models.features import schema_hash
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.timeutil import MS_PER_DAY, to_iso
from memberpulse.models.train import LOO_HELD_OUT, TRANSITION_WEIGHTS, train
from memberpulse.streams.cli.main import app
from memberpulse.streams.simulate import SimConfig, simulate_to_file

TINY = [
    "--set", "train_hidden=16", "--set", "train_heads=2", "--set", "train_ffn=32",
    "--set", "train_layers=1", "--set", "train_sequence_length=16",
]  # fmt: skip


TINY_CONFIG = TrainConfig(
    network=NetworkConfig(hidden=16, heads=2, ffn=32, layers=1),
    dataset=DatasetConfig(horizon_days=20, sequence_length=16),
    epochs=1,
    sasrec=SASRecConfig(hidden=16, max_length=16, max_epochs=12, patience=3),
)


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "events.parquet"
    simulate_to_file(SimConfig(members=400, days=100, seed=3), path)
    return path


def test_train_and_evaluate_end_to_end(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    log = load_events(log_path)
    horizon = 20
    until = log.end - horizon * MS_PER_DAY
    out = tmp_path / "model"
    started = time.perf_counter()
    trained = runner.invoke(
        app,
        [*TINY, "--home", str(tmp_path / "home"), "train", "--events", str(log_path),
         "--out", str(out), "--until", to_iso(until), "--horizon-days", str(horizon),
         "--epochs", "2", "--seed", "1"],
    )  # fmt: skip
    train_s = time.perf_counter() - started
    assert trained.exit_code == 0, trained.output
    assert "validation churn: ROC-AUC" in trained.output
    for name in ("model.pt", "config.json", "feature_spec.json", METRICS_FILE, "loss.png",
                 "roc.png", "calibration.png", "recall_at_k.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    bundle = load_bundle(out)
    assert bundle.spec.schema == schema_hash()
    assert bundle.config["until"] == until
    assert max(bundle.config["train_cutoffs"]) + horizon * MS_PER_DAY <= until  # labels < T
    fitted = json.loads((out / METRICS_FILE).read_text())["transitions"]
    assert fitted["weight"] in TRANSITION_WEIGHTS
    assert set(fitted["valid_recall@10"]) == {f"{w:g}" for w in TRANSITION_WEIGHTS}
    assert float(bundle.model.transition_weight) == fitted["weight"]
    assert bundle.model.transition_log_counts.any()  # the serving table, of every member

    started = time.perf_counter()
    evaluated = runner.invoke(
        app,
        ["evaluate", "--model", str(out), "--events", str(log_path), "--json",
         "--active-days", "14"],
    )  # fmt: skip
    eval_s = time.perf_counter() - started
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output)
    assert report["at"] == to_iso(until)
    assert report["horizon_days"] == horizon
    assert report["protocol"] == "time"
    assert 0 < report["n_members"] <= 400
    assert 0 < report["churn_rate"] < 1
    for key in ("roc_auc", "pr_auc", "brier", "ece"):
        assert 0 <= report["churn"]["model"][key] <= 1
    assert 0 <= report["churn"]["baselines"]["rfm"]["roc_auc"] <= 1
    baselines = report["next_item"]["baselines"]
    assert {"popularity", "recent"} <= set(baselines)
    assert ("transitions" in baselines) == bool(bundle.model.transition_log_counts.any())
    for figures in baselines.values():
        assert 0 <= figures["recall@10"] <= 1
    assert 0 <= report["next_item"]["model"]["ndcg@10"] <= report["next_item"]["model"]["recall@10"]
    assert 0 < report["spend"]["model"]["mae"] < math.inf
    assert report["active"]["n_members"] <= report["n_members"]
    # The strong baselines, on the same samples; SASRec only when asked (time protocol).
    assert "markov" in baselines
    assert "sasrec" not in baselines
    assert 0 <= report["churn"]["baselines"]["bgnbd"]["roc_auc"] <= 1
    assert 0 < report["spend"]["baselines"]["bgnbd_gg"]["mae"] < math.inf
    assert any("BG/NBD on roc_auc" in v for v in report["verdicts"])
    assert json.loads((out / METRICS_FILE).read_text())["train_seconds"] > 0
    assert "train wall time" in trained.output
    with capsys.disabled():
        print(f"\n[tiny model: train {train_s:.1f} s, evaluate {eval_s:.1f} s]")


def test_evaluate_refuses_a_time_inside_the_training_window(log_path: Path, tmp_path: Path) -> None:
    log = load_events(log_path)
    config = TINY_CONFIG
    until = log.end - 20 * MS_PER_DAY
    train(log, tmp_path / "m", config, StateSpec(), until)
    result = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(tmp_path / "m"), "--events", str(log_path),
         "--at", to_iso(until - MS_PER_DAY)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "seen in training" in str(result.exception)


def test_seeded_training_is_reproducible(log_path: Path, tmp_path: Path) -> None:
    log = load_events(log_path)
    config = replace(TINY_CONFIG, seed=5)
    first = train(log, tmp_path / "a", config, StateSpec())
    second = train(log, tmp_path / "b", config, StateSpec())
    assert first.history == second.history
    assert first.metrics["churn"] == second.metrics["churn"]


def test_purchase_only_log_with_one_item_id_trains_and_evaluates(tmp_path: Path) -> None:
    """An order log: purchases only, one item id for everything (no catalogue to rank)."""
    path = tmp_path / "orders.parquet"
    simulate_to_file(SimConfig(members=400, days=100, seed=4, purchase_only=True), path)
    table = pq.read_table(path)
    table = table.set_column(
        table.column_names.index("item_id"), "item_id", pa.array(["order"] * table.num_rows)
    )
    pq.write_table(table, path)
    log = load_events(path)
    assert set(log.item_names) == {"order"}
    config = replace(TINY_CONFIG, dataset=replace(TINY_CONFIG.dataset, min_item_count=1))
    until = log.end - 20 * MS_PER_DAY
    train(log, tmp_path / "m", config, StateSpec(), until)
    report = evaluate(load_bundle(tmp_path / "m"), log)
    assert 0 <= report["churn"]["model"]["roc_auc"] <= 1
    assert report["next_item"]["catalogue"] == 1


def test_leave_one_out_protocol(log_path: Path, tmp_path: Path) -> None:
    log = load_events(log_path)
    config = replace(TINY_CONFIG, protocol="leave-one-out")
    result = train(log, tmp_path / "m", config, StateSpec())
    # Training never saw each member's last two events: its window ends before them.
    held_out = log.without_last(LOO_HELD_OUT)
    assert load_bundle(tmp_path / "m").config["until"] == held_out.end + 1
    assert result.metrics["training"]["samples"] > 0
    report = evaluate(load_bundle(tmp_path / "m"), log, protocol="leave-one-out")
    members_with_two = sum(
        1 for m in log.iter_members() if log.rows(m).stop - log.rows(m).start > 1
    )
    assert report["next_item"]["n_targets"] == members_with_two
    assert report["protocol"] == "leave-one-out"
    assert "skipped" in report["churn"]  # T lies inside that model's training window
    # Leave-one-out trains SASRec by default; the report names its epochs and figures.
    sasrec = report["next_item"]["baselines"]["sasrec"]
    assert 1 <= sasrec["epochs_run"] <= config.sasrec.max_epochs
    assert 0 <= sasrec["ndcg@10"] <= sasrec["recall@10"] <= 1
    assert {"recall@10", "ndcg@10"} <= set(report["next_item"]["baselines"]["markov"])
    assert all(v.startswith("next item") for v in report["verdicts"])
    assert result.metrics["training"]["sasrec"]["hyperparameters"]["hidden"] == 16
    assert report["next_item"]["exclude_seen"] is False


def test_leaving_seen_items_out_never_ranks_a_target_lower(log_path: Path, tmp_path: Path) -> None:
    """--exclude-seen (RecBole's full-sort convention): every ranker's figures are at least
    those of the full ranking, popularity's strictly higher (members saw popular items),
    and "recent items", which ranks only seen items first, is not reported."""
    log = load_events(log_path)
    train(log, tmp_path / "m", replace(TINY_CONFIG, protocol="leave-one-out"), StateSpec())
    bundle = load_bundle(tmp_path / "m")
    full = evaluate(bundle, log, protocol="leave-one-out")["next_item"]
    left_out = evaluate(bundle, log, protocol="leave-one-out", exclude_seen=True)["next_item"]
    assert left_out["exclude_seen"] is True
    assert "recent" in full["baselines"]
    assert "recent" not in left_out["baselines"]
    assert left_out["n_targets"] == full["n_targets"]
    pairs = [(left_out["model"], full["model"])] + [
        (figures, full["baselines"][name]) for name, figures in left_out["baselines"].items()
    ]
    for masked, plain in pairs:
        for key in ("recall@10", "ndcg@10"):
            assert masked[key] >= plain[key] - 1e-12
    assert (
        left_out["baselines"]["popularity"]["ndcg@10"] > full["baselines"]["popularity"]["ndcg@10"]
    )


def test_time_protocol_trains_sasrec_only_when_asked(log_path: Path, tmp_path: Path) -> None:
    log = load_events(log_path)
    until = log.end - 20 * MS_PER_DAY
    plain = train(log, tmp_path / "plain", TINY_CONFIG, StateSpec(), until)
    asked = train(log, tmp_path / "asked", replace(TINY_CONFIG, baselines=True), StateSpec(), until)
    assert "sasrec" not in plain.metrics["training"]
    assert asked.metrics["training"]["sasrec"]["epochs_run"] >= 1
    report = evaluate(load_bundle(tmp_path / "asked"), log)
    assert report["next_item"]["baselines"]["sasrec"]["epochs_run"] >= 1


def test_shorter_horizon_targets_follow_the_days_to_the_first_purchase() -> None:
    import torch

    from memberpulse.models import train as training
    from memberpulse.models.network import MemberTransformer, Vocabulary

    config = replace(TINY_CONFIG, network=replace(TINY_CONFIG.network, short_horizons=(0.25, 0.5)))
    vocab = Vocabulary(n_item_ids=300, first_item=258, n_categories=3, n_price_buckets=4,
                       sequence_length=16)  # fmt: skip
    model = MemberTransformer(config.network, vocab)
    z = torch.zeros(3, config.network.hidden)
    with torch.no_grad():
        model.short_churn_head.weight.zero_()
        model.short_churn_head.bias.copy_(torch.tensor([-20.0, 20.0]))  # says: buys ≤ 5 d, not ≤ 10
    horizon = config.dataset.horizon_days  # 20 days: limits 5 and 10 days
    waits = torch.tensor([7.0, 7.0, 7.0], dtype=torch.float64)  # bought on day 7 of the window
    batch = training._Batch([], torch.zeros(3), torch.zeros(3), torch.zeros(3), None, waits)
    assert horizon == 20
    # Day 7: no purchase within 5 days (label 1), one within 10 (label 0) — the head says the
    # opposite of both, so the loss is large; flipped, it is ~0.
    with torch.no_grad():
        wrong = training._short_horizon_loss(model, z, batch, config)
    with torch.no_grad():
        model.short_churn_head.bias.copy_(torch.tensor([20.0, -20.0]))
        right = training._short_horizon_loss(model, z, batch, config)
    assert float(wrong) > 10
    assert float(right) < 1e-6


def test_repeat_scores_learn_at_their_own_rate_and_every_parameter_is_optimised_once() -> None:
    import torch

    from memberpulse.models import train as training
    from memberpulse.models.network import MemberTransformer, Vocabulary

    config = replace(TINY_CONFIG, repeat_lr_scale=10.0)
    vocab = Vocabulary(n_item_ids=300, first_item=258, n_categories=3, n_price_buckets=4,
                       sequence_length=16)  # fmt: skip
    model = MemberTransformer(config.network, vocab)
    groups = training._parameter_groups(model, config)
    optimiser = torch.optim.AdamW(groups, lr=config.learning_rate)
    ids = [id(p) for group in optimiser.param_groups for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    rates = {id(p): group["lr"] for group in optimiser.param_groups for p in group["params"]}
    assert rates[id(model.repeat)] == pytest.approx(10.0 * config.learning_rate)
    assert rates[id(model.item.weight)] == pytest.approx(config.learning_rate)


@pytest.mark.parametrize("draws", [0, 16], ids=["full-softmax", "sampled-softmax"])
def test_every_position_loss_adds_each_earlier_events_repeat_score_to_its_item(
    draws: int,
) -> None:
    """The every-position next-item loss, against a reference built item by item: at
    position j every candidate's logit is query · item + bias (− log Q for a draw) plus the
    repeat score of each event l ≤ j holding that item; padding adds nothing; a draw equal
    to the target is masked."""
    import math

    import torch
    from torch.nn import functional as F

    from memberpulse.models import train as training
    from memberpulse.models.features import FeatureBatch
    from memberpulse.models.network import MemberTransformer, Vocabulary

    torch.manual_seed(3)
    config = replace(TINY_CONFIG, sampled_negatives=draws)
    first, n_items, length, rows = 10, 40, 6, 3
    vocab = Vocabulary(n_item_ids=first + n_items, first_item=first, n_categories=3,
                       n_price_buckets=4, sequence_length=length)  # fmt: skip
    model = MemberTransformer(config.network, vocab)
    with torch.no_grad():
        model.repeat.copy_(torch.randn_like(model.repeat))
        model.item_bias.copy_(torch.randn_like(model.item_bias))
    items = torch.randint(first, first + n_items, (rows, length))
    items[0, 4] = items[0, 1]  # a repeated item: its scores add up
    items[1, 2] = 3  # not a catalogue item: no repeat score, no target
    types = torch.randint(1, 4, (rows, length))
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[2, :2] = False  # padding
    inputs: list[torch.Tensor | None] = [None] * len(FeatureBatch._fields)
    inputs[training._ITEMS], inputs[training._TYPES], inputs[training._MASK] = items, types, mask
    after = torch.tensor([5, -1, 7])
    batch = training._Batch(inputs, torch.zeros(rows), torch.zeros(rows), after)  # type: ignore[arg-type]
    events = torch.randn(rows, length, config.network.hidden)
    counts = torch.randint(0, 9, (n_items,)).numpy()
    log_q = training.sampling_log_q(counts, max(draws, 1))
    torch.manual_seed(11)
    with torch.no_grad():
        loss = training._every_position_loss(model, events, batch, log_q, config)
        torch.manual_seed(11)
        negatives = torch.multinomial(torch.exp(log_q - math.log(max(draws, 1))), max(draws, 1),
                                      replacement=True)  # fmt: skip
        weights = model.repeat_weights(types)
        catalogue, queries = model.catalogue(), model.item_query(events)
        losses = []
        for b in range(rows):
            for j in range(length):
                target = after[b] if j == length - 1 else items[b, j + 1] - first
                if not mask[b, j] or target < 0:
                    continue
                logits = queries[b, j] @ catalogue.T + model.item_bias
                for position in range(j + 1):
                    if mask[b, position] and items[b, position] >= first:
                        logits[items[b, position] - first] += weights[b, j, position]
                if draws:
                    wanted = logits[target] - log_q[target]
                    drawn = logits[negatives] - log_q[negatives]
                    drawn[negatives == target] = -math.inf
                    logits, target = torch.cat([wanted.view(1), drawn]), torch.tensor(0)
                losses.append(F.cross_entropy(logits.unsqueeze(0), target.view(1)))
    assert len(losses) == rows * length - 2 - 2  # padding (2) and no catalogue target (2)
    assert float(loss) == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
