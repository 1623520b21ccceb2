"""Process-wide runtime settings (pure: the GC state is restored after each test)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.runtime import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_threshold_freezes_what_is_loaded_and_raises_only_generation_0(
    restored_gc: None,
) -> None:
    _gen0, gen1, gen2 = gc.get_threshold()
    tune_gc(Settings(worker_gc_gen0_threshold=12_345).worker)
    assert gc.get_threshold() == (12_345, gen1, gen2)
    assert gc.get_freeze_count() > 0


def test_no_threshold_leaves_python_defaults_alone(restored_gc: None) -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    tune_gc(Settings(worker_gc_gen0_threshold=0).worker)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_the_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_WORKER_GC_GEN0_THRESHOLD", "20000")
    assert Settings().worker.gc_gen0_threshold == 20_000
    monkeypatch.setenv("MEMBERPULSE_WORKER_GC_GEN0_THRESHOLD", "-1")
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings()
