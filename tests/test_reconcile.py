"""The start-first rollout's reconcile decision (workers/start_first.py plan_reconcile), without Docker or a proxy:
what is removed, retired, put back and registered, given the running containers and the proxy's servers.

tests/test_start_first.py drives the same decisions end to end, through a real HAProxy and real containers.
"""

from __future__ import annotations

import pytest

from docker_runtime.haproxy import Server
from workers.start_first import Reconciliation, plan_reconcile


def servers(**states: str) -> list[Server]:
    """The proxy's servers, name=state (ready, drain or maint), in the order given."""
    return [Server(name, f"10.0.0.{index}", 8080, state) for index, (name, state) in enumerate(states.items(), 1)]


CASES: dict[str, tuple[list[str], list[Server], Reconciliation]] = {
    "steady": (["old"], servers(old="ready"), Reconciliation(serving=["old"])),
    "container-gone": (
        ["new"],
        servers(old="ready", new="ready"),
        Reconciliation(delete=["old"], serving=["new"]),
    ),
    "never-took-traffic": (
        ["old", "new"],
        servers(old="ready"),
        Reconciliation(discard=["new"], serving=["old"]),
    ),
    "left-draining": (
        ["old", "new"],
        servers(old="drain", new="ready"),
        Reconciliation(retire=["old"], serving=["new"]),
    ),
    "left-in-maintenance": (
        ["old", "new"],
        servers(old="maint", new="ready"),
        Reconciliation(retire=["old"], serving=["new"]),
    ),
    "nothing-ready-after-a-proxy-restart": (
        ["old", "new"],
        [],
        Reconciliation(register=["old", "new"], serving=["old", "new"]),
    ),
    "nothing-ready-but-draining": (
        ["old", "new"],
        servers(old="drain"),
        Reconciliation(restore=["old"], register=["new"], serving=["old", "new"]),
    ),
    "nothing-ready-and-a-gone-server": (
        ["new"],
        servers(gone="ready", new="drain"),
        Reconciliation(delete=["gone"], restore=["new"], serving=["new"]),
    ),
    "first-deploy": ([], [], Reconciliation()),
    "first-start-first-deploy-after-recreate": (
        ["old"],
        [],
        Reconciliation(register=["old"], serving=["old"]),
    ),
    "a-worker-died-mid-drain-and-mid-start": (
        ["old", "mid", "new"],
        servers(gone="drain", old="drain", mid="ready"),
        Reconciliation(delete=["gone"], discard=["new"], retire=["old"], serving=["mid"]),
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_plan_reconcile(case: str) -> None:
    running, found, expected = CASES[case]
    assert plan_reconcile(running, found) == expected


def test_the_proxy_is_never_left_pointing_at_nothing_while_something_runs() -> None:
    for running, found, _ in CASES.values():
        plan = plan_reconcile(running, found)
        assert bool(plan.serving) == bool(running), (running, found, plan)
        assert set(plan.serving) <= set(running), "a server serves whose container is gone"
        removed = set(plan.delete) | set(plan.discard) | set(plan.retire)
        assert not removed & set(plan.serving), (plan, "a server both serves and goes")
