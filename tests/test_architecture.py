"""The import contracts between deployhook's packages, checked on the source (no import side effects).

ALLOWED says which packages each package may import. The README's package diagram (under
"## Architecture") draws it: a package may import what the arrows lead it to, directly or through
another package, and each arrow drawn is an import the code makes (an arrow the code dropped, such
as workers -> deploy_reporting once, fails). The tests read that diagram and fail when it and
ALLOWED disagree. The arrows point one way, and no module imports itself back through others (an
import circle), between packages or inside one.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import redis
import testbed

from deploy_state import ContainersStatus, ContainerState, DeploymentStore, EngineStatus

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
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
    # Docker, Compose, git and the commands the pipeline runs.
    "docker_runtime": {"deploy_config", "deploy_text"},
    "deploy_reporting": {"deploy_config", "deploy_state", "deploy_text"},
    # The web app never imports the pipeline (workers), the reporting nor the CLI.
    "hook_server": {"deploy_config", "deploy_state", "deploy_text", "docker_runtime"},
    # The pipeline reports only through the outbox (deploy_state): it never imports deploy_reporting.
    "workers": {"deploy_config", "deploy_state", "deploy_text", "docker_runtime"},
    # The CLI, the process supervisor and the poller.
    "deploy_cli": OURS - {"deploy_cli"},
}

#: Modules a package must not import: state makes no HTTP calls, config runs nothing, the web app leaves Docker and
#: git to docker_runtime and reads each environment's engine and containers from Redis, as the workers found them
#: (it never lists containers nor asks an engine itself).
FORBIDDEN: dict[str, set[str]] = {
    "deploy_state": {"requests", "urllib3", "http", "urllib.request", "docker", "git", "subprocess", "flask"},
    "deploy_config": {"requests", "urllib3", "urllib.request", "redis", "rq", "docker", "git", "subprocess", "flask"},
    "deploy_text": {"requests", "redis", "rq", "docker", "git", "subprocess", "flask"},
    "hook_server": {
        "docker",
        "git",
        "subprocess",
        "docker_runtime.containers",
        "docker_runtime.engine",
        "docker_runtime.engines",
        "docker_runtime.ssh",
    },
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


def package_imports() -> dict[str, set[str]]:
    """{package: the other packages of ours its modules import}, as the code has it."""
    found: dict[str, set[str]] = {package: set() for package in OURS}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            for _, module in imported_modules(path):
                top = module.split(".")[0]
                if top in OURS and top != package:
                    found[package].add(top)
    return found


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


# --- the README's package diagram ------------------------------------------------------------------------------

ARROW = re.compile(r"\s*─+►\s*")
CHAIN = re.compile(r"\w+(?:\s*─+►\s*\w+)*")


def readme_diagram() -> list[str]:
    """The lines of the first ``` block under "## Architecture"."""
    text = README.read_text()
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```\n(.*?)^```$", section, re.S | re.M)
    assert block, 'README.md: no ``` block under "## Architecture"'
    return block.group(1).splitlines()


def diagram_arrows(lines: list[str]) -> set[tuple[str, str]]:
    """(from, to) for each arrow of chains such as ` a ──► b ──► c` (one chain a line; nothing else on it)."""
    arrows = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        assert CHAIN.fullmatch(line.strip()), f"diagram line {number} is not a chain `a ──► b ──► c`: {line!r}"
        names = ARROW.split(line.strip())
        unknown = [name for name in names if name not in OURS]
        assert not unknown, f"diagram line {number} names {unknown}, which are not packages of ours"
        arrows.update(zip(names, names[1:], strict=False))
    return arrows


def reach(arrows: set[tuple[str, str]]) -> dict[str, set[str]]:
    """{package: every package its arrows lead to, directly or through others}."""
    direct: dict[str, set[str]] = {package: set() for package in OURS}
    for source, target in arrows:
        direct[source].add(target)
    reached: dict[str, set[str]] = {}
    for package in OURS:
        seen: set[str] = set()
        todo = list(direct[package])
        while todo:
            target = todo.pop()
            if target not in seen:
                seen.add(target)
                todo.extend(direct[target])
        reached[package] = seen
    return reached


def test_the_readme_diagram_draws_the_contract() -> None:
    """A package may import what the diagram's arrows lead it to, directly or through another package: the
    diagram draws each arrow once, ALLOWED lists each package's whole reach; they must agree."""
    arrows = diagram_arrows(readme_diagram())
    drawn = reach(arrows)
    differences = [
        f"{package}: the diagram reaches {sorted(drawn[package])}, ALLOWED says {sorted(ALLOWED[package])}"
        for package in sorted(OURS)
        if drawn[package] != ALLOWED[package]
    ]
    assert not differences, "README.md's package diagram and ALLOWED disagree:\n" + "\n".join(differences)
    # An arrow the code does not have (a package that reaches another only through a third) is a false picture.
    actual = package_imports()
    undrawn = sorted(f"{source} ──► {target}" for source, target in arrows if target not in actual[source])
    assert not undrawn, f"README.md's diagram draws imports no module makes: {undrawn}"


def test_the_diagram_reader_reads_chains_and_refuses_anything_else() -> None:
    assert diagram_arrows([" deploy_cli ──► workers ───► deploy_state", "", " workers ─► docker_runtime"]) == {
        ("deploy_cli", "workers"),
        ("workers", "deploy_state"),
        ("workers", "docker_runtime"),
    }
    with pytest.raises(AssertionError, match="not a chain"):
        diagram_arrows([" deploy_cli ──► workers, deploy_reporting"])
    with pytest.raises(AssertionError, match="not packages of ours"):
        diagram_arrows([" deploy_cli ──► worker"])


# --- import circles -----------------------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """{module: the modules of ours it imports}.

    Every import counts, also one inside a function or under TYPE_CHECKING: a circle that a deferred
    import hides is still a circle (the modules cannot be read, tested or moved apart, and the deferral
    holds only until the import order changes). `from pkg import name` is an edge to pkg.name when that
    is a module, else to pkg; a package's __init__, which Python runs before any of its modules, is not
    an edge of its own.
    """
    paths = {module_name(path): path for package in OURS for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
                module = ".".join(part for part in (base, node.module or "") if part)
                for alias in node.names:
                    targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in paths else module)
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def import_circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return circles


def test_no_import_circle() -> None:
    graph = module_graph()
    circles = import_circles(graph)
    described = [
        ", ".join(f"{source} -> {target}" for source in circle for target in sorted(graph[source]) if target in circle)
        for circle in circles
    ]
    assert not circles, "import circles (break each: move what both sides need into a module of its own):\n" + (
        "\n".join(described)
    )


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a.base": {"a.demo"}, "a.demo": {"a.init"}, "a.init": {"a.base"}, "a.cli": {"a.base"}, "b": set()}
    assert import_circles(graph) == [["a.base", "a.demo", "a.init"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_the_contract_has_no_circle() -> None:
    circles = import_circles({package: set(targets) for package, targets in ALLOWED.items()})
    assert not circles, f"ALLOWED lets packages import each other both ways: {circles}"


# --- what the web app loads ---------------------------------------------------------------------------------------


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in the test bed (tests/testbed.py and the helper modules beside it, README "The test
    bed"): a test module runs, moves or goes without taking another's tests along."""
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for line, module in imported_modules(path)
        if any(part.startswith("test_") for part in module.split("."))
    ]
    assert found == []


def test_the_web_app_loads_neither_the_docker_sdk_nor_gitpython(config_file: Path) -> None:
    """create_app and every module of hook_server, in a fresh interpreter: Docker and git are docker_runtime's,
    and their libraries load there when a page or an API call needs them, never because the web app started."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import hook_server\n"
        "hook_server.create_app({'REDIS_URL': 'redis://127.0.0.1:1/0'})\n"
        "for module in pkgutil.iter_modules(hook_server.__path__):\n"
        "    importlib.import_module('hook_server.' + module.name)\n"
        "heavy = [n for n in sys.modules if n in ('docker', 'git') or n.startswith(('docker.', 'git.'))]\n"
        "print(json.dumps(sorted(heavy)))\n"
    )
    env = {**os.environ, "DEPLOYHOOK_CONFIG": str(config_file)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the web app loaded the Docker SDK or GitPython: {loaded[:5]}"


def test_the_status_page_and_the_api_show_engines_and_containers_without_the_docker_sdk(
    config_file: Path, redis_url: str, redis_conn: redis.Redis, secrets: testbed.Secrets
) -> None:
    """The page and GET /api/environments, rendered in a fresh interpreter on a real Redis holding what a worker
    found: the engine and the containers come from there, and neither view loads the Docker SDK to show them."""
    store = DeploymentStore(redis_conn)
    store.record_engine_status(EngineStatus("staging", "local", "local (unix:///x.sock)", "27.1.1", "", True, "", 1.0))
    app = ContainerState("app", "proj-app-1", "running (healthy)", 512 * 1024**2, 0.5)
    store.record_container_status(ContainersStatus("staging", "local", time.time(), [app]))
    code = (
        "import json, sys\n"
        "import hook_server\n"
        f"client = hook_server.create_app({{'REDIS_URL': {redis_url!r}}}).test_client()\n"
        "page, api = client.get('/'), client.get('/api/environments')\n"
        "assert page.status_code == 200 and api.status_code == 200, (page.status_code, api.status_code)\n"
        "html = page.get_data(as_text=True)\n"
        "assert 'proj-app-1' in html and 'running (healthy)' in html, 'the containers are not on the page'\n"
        "assert 'Docker Compose v2 is not installed where the workers of staging run' in html, 'no banner'\n"
        "assert api.json['environments'][0]['engine']['last_check']['docker_version'] == '27.1.1'\n"
        "heavy = [n for n in sys.modules if n in ('docker', 'git') or n.startswith(('docker.', 'git.'))]\n"
        "print(json.dumps(sorted(heavy)))\n"
    )
    env = {**os.environ, "DEPLOYHOOK_CONFIG": str(config_file)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"showing the page or the API loaded the Docker SDK or GitPython: {loaded[:5]}"
