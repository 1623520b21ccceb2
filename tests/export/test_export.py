"""Export, parity gate, variants, scorer, registry and hot reload on freshly trained tiny models."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from memberpulse.export.onnx_export import CARD_METADATA_KEY
from memberpulse.export.parity import Outputs as ParityOutputs
from memberpulse.export.parity import (
    ParityError,
    accuracy,
    check_parity,
    compare,
    exclusions,
    onnx_outputs,
    torch_outputs,
)
from memberpulse.export.pipeline import export_model
from memberpulse.export.variants import _judge, session
from memberpulse.models.bundle import load_bundle, load_heldout
from memberpulse.models.config import DatasetConfig, NetworkConfig, TrainConfig
from memberpulse.models.eventlog import load_events
from memberpulse.models.features import FeatureSpec
from memberpulse.models.snapshot import StateSpec
from memberpulse.models.train import train
from memberpulse.streams.cli.main import app
from memberpulse.streams.serving.files import card_path, spec_path
from memberpulse.streams.serving.registry import (
    ModelHolder,
    ModelRejected,
    Registry,
    check,
    redis_promoted,
)
from memberpulse.streams.serving.scorer import CPU, Scorer, loadable_providers
from memberpulse.streams.settings import Settings
from memberpulse.streams.simulate import SimConfig, simulate_to_file
from memberpulse.streams.state.client import make_redis
from tests.helpers import wait_until

TOP_K = 10
TINY = TrainConfig(
    network=NetworkConfig(hidden=16, heads=2, ffn=32, layers=1),
    dataset=DatasetConfig(horizon_days=20, sequence_length=16),
    epochs=1,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny trained models (different seeds, so different weights and versions)."""
    root = tmp_path_factory.mktemp("models")
    simulate_to_file(SimConfig(members=300, days=80, seed=11), root / "events.parquet")
    log = load_events(root / "events.parquet")
    for seed in (1, 2):
        train(log, root / f"m{seed}", replace(TINY, seed=seed), StateSpec())
    return root / "m1", root / "m2"


@pytest.fixture(scope="module")
def exported(models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("onnx")
    return [
        export_model(model, out / f"model{i}.onnx", TOP_K).onnx for i, model in enumerate(models)
    ]


def test_export_writes_card_spec_and_passes_parity(
    models: tuple[Path, Path], exported: list[Path]
) -> None:
    path = exported[0]
    card = json.loads(card_path(path).read_text())
    assert card["parity"]["churn_max_abs"] <= 1e-4
    assert card["parity"]["topk_set_agreement"] >= 0.99
    assert card["export"]["opset"] >= 17
    assert card["export"]["top_k"] == TOP_K
    assert card["training"]["horizon_days"] == 20
    assert card["feature_schema"] == load_bundle(models[0]).spec.schema
    percentiles = card["churn_risk_percentiles"]  # the worker's churn thresholds come from here
    assert len(percentiles) == 99
    assert percentiles == sorted(percentiles)
    assert 0 <= percentiles[0] < percentiles[-1] <= 1
    embedded = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(embedded[CARD_METADATA_KEY])["version"] == card["version"]
    assert FeatureSpec.load(spec_path(path)) == load_bundle(models[0]).spec
    for name in ("int8", "fp16"):
        variant = card["variants"][name]
        assert set(variant["delta"]) == {"churn_roc_auc", "recall@10"}
        assert variant["refused"] or path.with_name(f"model0.{name}.onnx").exists()
    assert card["variants"]["fp16"]["speedup"] is None or torch.cuda.is_available()


def test_parity_gate_refuses_a_graph_of_other_weights(
    models: tuple[Path, Path], exported: list[Path]
) -> None:
    other = session(exported[1], [CPU])  # model 2's graph checked against model 1's weights
    with pytest.raises(ParityError, match="disagrees with PyTorch"):
        check_parity(load_bundle(models[0]), other, TOP_K)


def test_exclusions_never_come_back_and_torch_matches_onnx(
    models: tuple[Path, Path], exported: list[Path]
) -> None:
    bundle = load_bundle(models[0])
    features, _, _ = load_heldout(models[0])
    features = features.take(np.arange(min(64, features.rows)))
    exclude = exclusions(features, bundle.spec.first_item)
    ours = onnx_outputs(session(exported[0], [CPU]), features, exclude)
    for row, banned in zip(ours.top_items, exclude, strict=True):
        assert not set(row.tolist()) & {b for b in banned.tolist() if b >= 0}
    assert compare(torch_outputs(bundle, features, exclude, TOP_K), ours).passed()


def test_scorer_buckets_pad_without_changing_scores(
    models: tuple[Path, Path], exported: list[Path]
) -> None:
    bundle = load_bundle(models[0])
    features, _, _ = load_heldout(models[0])
    scorer = Scorer(exported[0], bundle.spec, buckets=(4, 16))
    assert scorer.providers == [CPU]
    rows = features.take(np.arange(19))  # one full bucket of 16 and a padded 4
    together = scorer.score(rows)
    alone = scorer.score(rows.take(np.arange(3)))
    assert len(together) == 19
    np.testing.assert_allclose(together.churn[:3], alone.churn, rtol=1e-5)
    np.testing.assert_array_equal(together.top_items[:3], alone.top_items)
    assert scorer.item_ids(alone.top_items)[0][0] in bundle.spec.items


def test_provider_choice_is_quiet_on_a_cpu_machine(capfd: pytest.CaptureFixture[str]) -> None:
    providers = loadable_providers()
    assert providers[-1] == CPU
    if not torch.cuda.is_available():
        assert providers == [CPU]
    captured = capfd.readouterr()
    assert "error" not in (captured.out + captured.err).lower()


def _registry_with_both(tmp_path: Path, exported: list[Path]) -> tuple[Registry, list[str]]:
    registry = Registry(tmp_path / "registry")
    return registry, [registry.add(path) for path in exported]


def test_promote_switches_current_and_checks_the_model(
    tmp_path: Path, exported: list[Path]
) -> None:
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    assert registry.current() is None
    registry.promote(v1)
    assert registry.current() == v1
    registry.promote(v2)
    assert registry.current() == v2
    with pytest.raises(ValueError, match="no model version"):
        registry.promote("nope")


def test_corrupt_file_and_mismatched_schema_are_refused(
    tmp_path: Path, exported: list[Path]
) -> None:
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    holder = ModelHolder(registry)
    registry.promote(v1)
    assert holder.refresh()
    data = bytearray(registry.path(v2).read_bytes())
    data[len(data) // 2] ^= 0xFF
    registry.path(v2).write_bytes(bytes(data))
    with pytest.raises(ModelRejected, match="corrupt"):
        check(registry, v2)
    (registry.root / "current").unlink()
    (registry.root / "current").symlink_to(v2)  # as if promoted before the file broke
    assert not holder.refresh()
    assert holder.current().version == v1
    assert holder.refusals == 1

    card_file = card_path(registry.path(v1))
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps(card | {"feature_schema": "0" * 16}))
    with pytest.raises(ModelRejected, match="schema"):
        registry.promote(v1)


def test_hot_reload_under_a_running_scorer_loses_and_repeats_nothing(
    models: tuple[Path, Path], tmp_path: Path, exported: list[Path]
) -> None:
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    registry.promote(v1)
    holder = ModelHolder(registry)
    holder.refresh()
    features, _, _ = load_heldout(models[0])
    batches: queue.Queue[int | None] = queue.Queue()
    scored: list[tuple[int, str, int]] = []

    def loop() -> None:  # the worker's shape: refresh between batches, then score
        while (batch := batches.get()) is not None:
            holder.refresh()
            model = holder.current()
            rows = features.take(np.arange(batch % 7 + 1))
            scored.append((batch, model.version, len(model.scorer.score(rows))))

    worker = threading.Thread(target=loop)
    worker.start()
    for batch in range(40):
        if batch == 20:  # promote while the loop runs, once half the batches were scored
            wait_until(lambda: len(scored) >= 15, timeout=60, what="first batches scored")
            registry.promote(v2)
        batches.put(batch)
    batches.put(None)
    worker.join(timeout=120)
    assert [b for b, _, _ in scored] == list(range(40))  # each batch once, in order
    assert all(n == b % 7 + 1 for b, _, n in scored)
    versions = [v for _, v, _ in scored]
    switch = versions.index(v2)
    assert switch >= 15
    assert set(versions[:switch]) == {v1}
    assert set(versions[switch:]) == {v2}
    assert holder.swaps == 2


def test_io_binding_path_matches_plain_runs_on_cpu(
    models: tuple[Path, Path], exported: list[Path]
) -> None:
    bundle = load_bundle(models[0])
    features, _, _ = load_heldout(models[0])
    rows = features.take(np.arange(20))
    plain = Scorer(exported[0], bundle.spec, buckets=(8, 32)).score(rows)
    bound_scorer = Scorer(exported[0], bundle.spec, buckets=(8, 32), io_binding=True)
    for _ in range(2):  # the second call reuses the bucket's preallocated buffers
        bound = bound_scorer.score(rows)
        np.testing.assert_allclose(bound.churn, plain.churn, rtol=1e-6)
        np.testing.assert_array_equal(bound.top_items, plain.top_items)


def test_a_variant_losing_too_much_auc_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.int8.onnx"
    path.write_bytes(b"x")
    churn = np.array([0.0, 1.0, 0.0, 1.0])
    good = ParityOutputs(
        np.array([0.1, 0.9, 0.2, 0.8]), np.zeros(4), np.zeros((4, 10)), np.zeros((4, 10))
    )
    bad = replace(good, churn=np.array([0.9, 0.1, 0.2, 0.8]))
    next_item = np.full(4, -2)
    base = accuracy(good, churn, next_item)
    kept = _judge("int8", path, CPU, good, churn, next_item, base, 2.0)
    assert kept.refused is None
    assert kept.path == path
    refused = _judge("int8", path, CPU, bad, churn, next_item, base, 2.0)
    assert refused.refused is not None
    assert "loses" in refused.refused
    assert refused.path is None
    assert not path.exists()


def test_refusals_and_swaps_are_metrics(tmp_path: Path, exported: list[Path]) -> None:
    registry, (v1, _v2) = _registry_with_both(tmp_path, exported)
    before = REGISTRY.get_sample_value("memberpulse_model_refusals_total", {"reason": "corrupt"})
    registry.path(v1).write_bytes(b"not onnx")
    (registry.root / "current").symlink_to(v1)
    holder = ModelHolder(registry)
    assert not holder.refresh()
    after = REGISTRY.get_sample_value("memberpulse_model_refusals_total", {"reason": "corrupt"})
    assert (after or 0) - (before or 0) == 1


@pytest.mark.integration
def test_promotion_is_published_in_redis_for_every_worker(
    isolated: Settings, tmp_path: Path, exported: list[Path]
) -> None:
    client = make_redis(isolated)
    registry, (v1, v2) = _registry_with_both(tmp_path, exported)
    prefix = isolated.redis_key_prefix
    elsewhere = ModelHolder(registry, promoted=redis_promoted(client, prefix))  # another host
    assert not elsewhere.refresh()  # nothing promoted yet
    registry.promote(v1, client, prefix)
    assert elsewhere.refresh()
    assert elsewhere.current().version == v1
    registry.promote(v2, client, prefix)
    assert elsewhere.refresh()
    assert elsewhere.current().version == v2


def test_bench_model_reports_every_cpu_backend_as_json(
    models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from memberpulse.streams.bench.decode import model as bench

    monkeypatch.setattr(bench, "BATCH_SIZES", (1, 8))
    monkeypatch.setattr(bench, "MIN_SECONDS", 0.0)
    monkeypatch.setenv("MEMBERPULSE_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "model", "--model", str(models[0]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    cells = {(row["backend"], row["batch_size"]): row for row in report["results"]}
    backends = {"torch-eager", "torch-eager-serving-graph", "onnx-fp32", "onnx-int8"}
    if any("INT8 variant was refused" in note for note in report["notes"]):
        backends.remove("onnx-int8")  # a 1-epoch model may lose too much AUC to INT8
    assert {(b, n) for b in backends for n in (1, 8)} <= set(cells)
    for row in report["results"]:
        assert row["seq_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["calls"] >= bench.MIN_CALLS * bench.ROUNDS
    assert report["parameters"] == load_bundle(models[0]).model.parameter_count()
