"""The registry itself: every script has its test module here, and nothing runs Lua any other way."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import redis

from deploy_state import scripts
from deploy_state.scripts import REGISTRY, Script, script

for _module in pkgutil.iter_modules(scripts.__path__):  # defining a script registers it
    importlib.import_module(f"deploy_state.scripts.{_module.name}")

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def test_every_script_has_a_test_module_of_its_name() -> None:
    modules = {path.stem.removeprefix("test_") for path in HERE.glob("test_*.py")} - {"registry"}
    defined_in = {path.stem for path in (REPO / "deploy_state" / "scripts").glob("*.py")} - {"__init__"}
    assert modules == defined_in, "a test module per script module (deploy_state/scripts/<name>.py)"
    assert len(REGISTRY) >= len(defined_in)


def test_nothing_else_sends_lua() -> None:
    """EVAL, EVALSHA and register_script appear only in the registry: one way to run a script."""
    callers = []
    for package in ("deploy_state", "workers", "hook_server", "deploy_cli", "deploy_reporting", "docker_runtime"):
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "deploy_state" / "scripts" / "__init__.py":
                continue
            if re.search(r"\.(eval|evalsha|register_script)\(", path.read_text()):
                callers.append(str(path.relative_to(REPO)))
    assert callers == []


def test_keys_and_args_are_passed_by_name(redis_conn: redis.Redis) -> None:
    body = "return {K.first, K.second, A.a, A.b, ARGV[A.REST]}"
    echo = Script("echo-for-test", ("first", "second"), ("a", "b"), body)
    assert echo(redis_conn, keys={"second": "k2", "first": "k1"}, args={"b": "2", "a": "1"}, more_args=["x"]) == [
        b"k1",
        b"k2",
        b"1",
        b"2",
        b"x",
    ]
    with pytest.raises(TypeError, match="takes keys"):
        echo(redis_conn, keys={"first": "k1"}, args={"a": "1", "b": "2"})


def test_a_name_is_defined_once() -> None:
    with pytest.raises(RuntimeError, match="defined twice"):
        script(next(iter(REGISTRY)), [], [], "return 1")
