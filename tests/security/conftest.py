"""The security tests share the fault suite's copy of the served model."""

from tests.faults.conftest import registry

__all__ = ["registry"]
