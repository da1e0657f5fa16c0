"""The reliability suite's own fixture: the hostile-input tally, written to the figures file once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .common import HOSTILE, record_figures


@pytest.fixture(scope="session", autouse=True)
def hostile_figures() -> Iterator[None]:
    yield
    if HOSTILE:
        record_figures("hostile", {name: dict(counts) for name, counts in sorted(HOSTILE.items())})
