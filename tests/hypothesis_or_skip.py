"""hypothesis, or stand-ins that skip the property tests where it is not installed (it is a
test extra): strategies are inert and @given marks the test skipped, saying why, so a module
with property tests still imports and its other tests run."""
from __future__ import annotations

import pytest

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:
    class _NoHypothesis:
        def __getattr__(self, name):
            return self

        def __call__(self, *args, **kwargs):
            return self

    HealthCheck = st = _NoHypothesis()

    def settings(*args, **kwargs):
        return lambda f: f

    def given(*args, **kwargs):
        return pytest.mark.skip(reason="hypothesis is not installed (pip install -e '.[test]')")

__all__ = ["HealthCheck", "given", "settings", "st"]
