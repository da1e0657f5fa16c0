"""What an RQ job written to Redis by someone else names for its worker to call (test_security_misc.py).

Each leaves a file named after the job in $DEPLOYHOOK_TEST_PROBE_DIR when called: proof that a real
worker imported and called a function a job's hash named. The worker finds this module on PYTHONPATH.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROBE_DIR_ENV = "DEPLOYHOOK_TEST_PROBE_DIR"


def ran(job: Any, connection: Any, *rest: Any) -> None:
    """A success, failure or stopped callback (RQ calls each with the job and its connection first)."""
    Path(os.environ[PROBE_DIR_ENV], str(job.id)).touch()
