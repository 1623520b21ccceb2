"""Where an exported model's companions live: `X.onnx.card.json`, `X.onnx.spec.json`.

Kept apart from `onnx_export` (which imports torch) so that the worker side — scorer and
registry — finds a model's card and spec without torch installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

CARD_SUFFIX: Final = ".card.json"
SPEC_SUFFIX: Final = ".spec.json"


def card_path(onnx_path: Path) -> Path:
    """The model card written beside an ONNX file."""
    return onnx_path.with_name(onnx_path.name + CARD_SUFFIX)


def spec_path(onnx_path: Path) -> Path:
    """The feature spec written beside an ONNX file."""
    return onnx_path.with_name(onnx_path.name + SPEC_SUFFIX)
