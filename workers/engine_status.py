"""Each environment's Docker engine and containers, checked by the workers and recorded for the page, the API and
the CLI.

A worker checks the engines of the environments it serves when it starts, then every
ENGINE_CHECK_INTERVAL, in a daemon thread of its own (EngineWatch): an engine that is down or hangs
costs that thread its bounded wait (engine.connect_timeout to log in, DESCRIBE_TIMEOUT for Docker
to answer), never the worker a job. RQ forks its work horse from the worker's main thread, and a
fork copies only the thread that makes it: the horse runs no checks. Each deployment's preflight
records what it found as well (record_engine). An engine that answers has its environment's
containers listed too (record_containers), as each deployment's end does, so that the page shows
them as the deployment left them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from redis import RedisError

from deploy_config import DeployConfig, DeployError, EnvironmentConfig, load_config
from deploy_state import ContainersStatus, ContainerState, DeploymentStore, EngineStatus
from deploy_state.containers import MAX_CONTAINERS
from docker_runtime.containers import list_containers
from docker_runtime.engine import compose_version
from docker_runtime.engines import Engine, EngineInfo, engine_for

log = logging.getLogger(__name__)

ENGINE_CHECK_INTERVAL = 60.0
"""Seconds between a worker's checks of its environments' engines."""

DESCRIBE_TIMEOUT = 5.0
"""Seconds an engine may take to say its version once connected."""

COMPOSE_TIMEOUT = 10.0
"""Seconds `docker compose version` may take (the local plugin: it answers at once or is missing)."""

CONTAINERS_TIMEOUT = 5.0
"""Seconds each Docker call listing an environment's containers may take (one list, one inspect per container)."""

STOP_WAIT = 30.0
"""Seconds a stopping worker waits for a check under way: enough for a login bounded by connect_timeout (at most
60 s, typically 15), so that no ssh it started is left behind; a longer one is given up on (the thread is a daemon)."""


def record_engine(
    store: DeploymentStore,
    env_name: str,
    engine: Engine,
    info: EngineInfo | None,
    error: str = "",
    compose: str | None = None,
) -> EngineStatus:
    """Record what a check of env's engine found: info when it answered, else why not (error).

    compose: `docker compose version --short` here (compose_version()), None when missing. Returns the
    status as stored, its last_seen carried over from the previous check when this one failed.
    """
    status = EngineStatus(
        environment=env_name,
        url=engine.config.url,
        address=info.address if info is not None else engine.address,
        docker_version=info.docker_version if info is not None else "",
        compose_version=compose or "",
        reachable=info is not None,
        error="" if info is not None else (error or "the engine did not answer"),
        checked_at=time.time(),
    )
    return store.record_engine_status(status)


def gather(store: DeploymentStore, env: EnvironmentConfig, compose: str | None = None) -> EngineStatus:
    """Connect to env's engine, ask its version, let go, and record what was found.

    compose: the Compose version found for this round of checks; asked now when not given.
    """
    engine = engine_for(env)
    info, error = None, ""
    try:
        engine.open()
        info = engine.describe(DESCRIBE_TIMEOUT)
        # An engine that does not answer keeps the last listing: the page says how old it is.
        record_containers(store, env, engine)
    except (DeployError, OSError) as exc:  # OSError: no ssh client here, a certificate file gone
        error = str(exc)
    finally:
        engine.close()
    return record_engine(store, env.name, engine, info, error, compose or compose_version(COMPOSE_TIMEOUT))


def record_containers(store: DeploymentStore, env: EnvironmentConfig, engine: Engine) -> ContainersStatus | None:
    """List env's containers on its engine (connected) and record them for the page; None when a listing begun
    later was recorded first. Docker's failures are recorded as the listing's error, Redis's are raised."""
    began = time.time()
    found = list_containers(engine, env.project, timeout=CONTAINERS_TIMEOUT, limit=MAX_CONTAINERS)
    items = [ContainerState(c.service, c.name, c.state, c.memory, c.cpus) for c in found.items]
    status = ContainersStatus(env.name, engine.config.url, began, items, found.error, found.more)
    return store.record_container_status(status)


class EngineWatch:
    """Checks the engines of a worker's environments in a daemon thread: at once, then every `interval` seconds.

    deploy.yml is read again for each round, as for each job: an environment moved to another engine
    is checked there from the next round.
    """

    def __init__(
        self,
        store: DeploymentStore,
        config: DeployConfig,
        config_file: Path,
        environments: Sequence[str],
        interval: float = ENGINE_CHECK_INTERVAL,
    ) -> None:
        self.store = store
        self.config = config
        self.config_file = config_file
        self.environments = list(environments)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reachable: dict[str, bool] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-check", daemon=True)
        self._thread.start()

    def stop(self, wait: float = STOP_WAIT) -> None:
        """Check no more; a check under way may finish first (within `wait`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)

    def check_all(self) -> list[EngineStatus]:
        """One round: each environment's engine, one after the other (each check bounded)."""
        compose = compose_version(COMPOSE_TIMEOUT)
        found = []
        for name in self.environments:
            if self._stop.is_set():
                break
            env = self.config.environments.get(name)
            if env is None:
                continue  # gone from deploy.yml since the worker started: its jobs fail saying so
            found.append(self._check(env, compose))
        return [status for status in found if status is not None]

    def _run(self) -> None:
        self.check_all()
        while not self._stop.wait(self.interval):
            self._reload()
            self.check_all()

    def _reload(self) -> None:
        try:
            self.config = load_config(self.config_file)
        except DeployError as exc:
            log.warning("engine check: %s; checking the engines deploy.yml named before", exc)

    def _check(self, env: EnvironmentConfig, compose: str | None) -> EngineStatus | None:
        try:
            status = gather(self.store, env, compose)
        except RedisError as exc:
            # Redis may be restarting; the next round records again.
            log.warning("engine check of %s: could not record it: %s", env.name, exc)
            return None
        except Exception:  # noqa: BLE001 - the thread must go on checking; the worker serves jobs regardless
            log.exception("engine check of %s failed unexpectedly", env.name)
            return None
        self._say_change(status)
        return status

    def _say_change(self, status: EngineStatus) -> None:
        """Log an engine going away or coming back (not every minute's check)."""
        before = self._reachable.get(status.environment)
        self._reachable[status.environment] = status.reachable
        if status.reachable and before is False:
            log.info("engine of %s at %s answers again", status.environment, status.address)
        elif not status.reachable and before is not False:
            log.warning("engine of %s is unreachable: %s", status.environment, status.error)
