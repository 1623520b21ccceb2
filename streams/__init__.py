"""Serving side of MemberPulse: decoding, Redis state, decisions, outputs, the CLI and stack.

Imports no torch or transformers: a worker runs from an ONNX file alone.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memberpulse")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
