"""The import contracts between deployhook's packages, checked on the source (no import side effects).

Each package has one job, and the arrows between them point one way:

    deploy_cli ──► hook_server ──► deploy_state ──► deploy_text ──► deploy_config
        │                                ▲               ▲
        └──────► workers ──► docker_runtime, deploy_reporting

A package may import only the packages listed for it here; anything else is a finding.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "deploy_cli",
    "deploy_config",
    "deploy_reporting",
    "deploy_state",
    "deploy_text",
    "docker_runtime",
    "hook_server",
    "workers",
}

ALLOWED: dict[str, set[str]] = {
    # The config is the base: it imports nothing of ours.
    "deploy_config": set(),
    "deploy_text": {"deploy_config"},
    # Redis only: records, logs, locks, queues, the outbox.
    "deploy_state": {"deploy_config", "deploy_text"},
    "docker_runtime": {"deploy_config", "deploy_text"},
    "deploy_reporting": {"deploy_config", "deploy_state", "deploy_text"},
    # The web app never imports the pipeline (workers) nor the CLI.
    "hook_server": {"deploy_config", "deploy_state", "deploy_text", "docker_runtime"},
    "workers": {"deploy_config", "deploy_state", "deploy_text", "docker_runtime", "deploy_reporting"},
    "deploy_cli": OURS - {"deploy_cli"},
}

#: Third-party modules a package must not import: state makes no HTTP calls, config runs nothing.
FORBIDDEN: dict[str, set[str]] = {
    "deploy_state": {"requests", "urllib3", "http", "urllib.request", "docker", "git", "subprocess", "flask"},
    "deploy_config": {"requests", "urllib3", "urllib.request", "redis", "rq", "docker", "git", "subprocess", "flask"},
    "deploy_text": {"requests", "redis", "rq", "docker", "git", "subprocess", "flask"},
    "hook_server": {"docker", "subprocess"},
}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _matches(module: str, banned: str) -> bool:
    return module == banned or module.startswith(banned + ".")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_contract_allows(package: str) -> None:
    findings = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top in OURS and top != package and top not in ALLOWED[package]:
                findings.append(f"{where} imports {module}: {package} may import only {sorted(ALLOWED[package])}")
            for banned in FORBIDDEN.get(package, set()):
                if _matches(module, banned):
                    findings.append(f"{where} imports {module}: {package} must not use {banned}")
    assert not findings, "\n".join(findings)


def test_every_package_has_a_contract() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(ALLOWED), "a new top-level package needs a line in ALLOWED"
