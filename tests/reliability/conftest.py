"""The reliability suite's own fixture: the hostile-input tally, written to the figures file once.

Under pytest-xdist each worker process keeps its own tally: a worker hands it to the controller
(workeroutput), which adds them up and writes the one section (tests/conftest.py: the controller
collects no tests, so it never loads this file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from .common import HOSTILE, record_hostile


@pytest.fixture(scope="session", autouse=True)
def hostile_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not HOSTILE:
        return
    workeroutput = getattr(request.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller writes the sum
        workeroutput["hostile"] = json.dumps(HOSTILE)
    else:
        record_hostile(HOSTILE)
