"""deploy_state: deployments, their logs, locks and queues, kept in Redis (the system of record).

Both the web process (hook_server) and the workers use this package; it never imports
Docker code. No Redis key string appears outside keys.py.
"""

from . import outbox
from .containers import ContainersStatus, ContainerState
from .engines import EngineStatus
from .locks import EnvironmentLock, LeaseKeeper, environment_lock
from .models import FINAL_STATUSES, Deployment, Status, Step, StepStatus, Trigger
from .queues import queue_for, queue_name
from .store import DeploymentStore, StatusConflict

__all__ = [
    "FINAL_STATUSES",
    "ContainerState",
    "ContainersStatus",
    "Deployment",
    "DeploymentStore",
    "EngineStatus",
    "EnvironmentLock",
    "LeaseKeeper",
    "Status",
    "StatusConflict",
    "Step",
    "StepStatus",
    "Trigger",
    "environment_lock",
    "outbox",
    "queue_for",
    "queue_name",
]
