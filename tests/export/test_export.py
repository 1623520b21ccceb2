"""Export, the parity gate and variants on freshly trained tiny models (the `models` and
`exported` fixtures of tests/conftest.py; the runtime's tests are in tests/streams/serving/)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

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
from memberpulse.export.variants import _judge, session
from memberpulse.models.bundle import load_bundle, load_heldout
from memberpulse.models.features import FeatureSpec
from memberpulse.streams.serving.files import card_path, spec_path
from memberpulse.streams.serving.scorer import CPU
from tests.helpers import TINY_TOP_K as TOP_K


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
