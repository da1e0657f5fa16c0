"""What a service lacks in its configuration that would fail it later: said once when it starts, and on the page.

Only what can be checked without running anything: the secrets' variables, the env file, and the key,
known_hosts and certificate files a remote engine names.
The Docker engine and Compose are checked by docker_runtime.engine.engine_warnings() when a service
starts; the page's banner reads what the workers found of them instead (hook_server/readiness.py).
"""

from __future__ import annotations

import os

from .schema import DeployConfig


def config_warnings(config: DeployConfig, web: bool = True) -> list[str]:
    """One line per missing piece, saying what fails without it and what to do; web adds the web server's secrets."""
    warnings = []
    if web:
        secret = config.webhook.secret_env
        if not os.environ.get(secret):
            warnings.append(
                f"{secret} is not set (webhook.secret_env in {config.source}): every push is refused until it is; "
                "set it to the secret of the repository's webhook (`deployhook init` generates one)"
            )
        token = config.api.token_env
        if not os.environ.get(token):
            warnings.append(
                f"{token} is not set (api.token_env in {config.source}): the API, `deployhook deploy`/`promote`/"
                "`rollback` and the page's buttons answer 503 until it is; set it to a long random token"
            )
    env_file = config.env_file
    if not env_file.is_file() or not os.access(env_file, os.R_OK):
        warnings.append(
            f"env file {env_file} is missing or not readable (env_file in {config.source}): every deployment fails "
            "its preflight until it exists; create it with the app's secrets (DB_USER, DB_PASSWORD, DB_NAME, ...)"
        )
    return warnings + engine_file_warnings(config)


def engine_file_warnings(config: DeployConfig) -> list[str]:
    """A remote engine's files (identity_file, known_hosts, TLS certificates) that this process cannot read."""
    warnings = []
    for env in config.environments.values():
        engine = env.engine
        named = {
            "identity_file": engine.identity_file, "known_hosts": engine.known_hosts,
            "tls_ca": engine.tls_ca, "tls_cert": engine.tls_cert, "tls_key": engine.tls_key,
        }  # fmt: skip
        for field, path in named.items():
            if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
                warnings.append(
                    f"environments.{env.name}.engine.{field}: {path} is missing or not readable: every deployment of "
                    f"{env.name} fails to reach {engine.url} until it is"
                )
    return warnings
