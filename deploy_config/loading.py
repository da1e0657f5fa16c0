"""Reading deploy.yml into a DeployConfig, with one clear message per problem."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from . import defaults
from .errors import ConfigError
from .interpolation import interpolate
from .schema import DeployConfig, EnvironmentConfig
from .secrets import read_env_file


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML would silently keep the last one."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *anchor`: construct_mapping merges it, and explicit keys override merged ones
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it ("found unhashable key")
        if key in first_line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first_line[key]})", key_node.start_mark
            )
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to read: the explicit one, else $DEPLOYHOOK_CONFIG, else deploy.yml."""
    return Path(explicit or os.environ.get(defaults.CONFIG_ENVVAR) or defaults.DEFAULT_CONFIG_PATH)


_SECRETS_FILE_READ = True
"""Whether load_config reads secrets_file into this process's environment: never_read_secrets_file() turns it off."""


def never_read_secrets_file() -> None:
    """From now on, load_config leaves secrets_file alone in this process (and in what it forks).

    `deployhook worker` calls it first: the pipeline runs the repository's code (hooks), which can read
    its parent's memory and environment (/proc/$PPID), and it needs none of deployhook's own secrets:
    the web app checks the webhook secret and the API token, the reporter uses the chat and GitHub ones.
    """
    global _SECRETS_FILE_READ
    _SECRETS_FILE_READ = False


def load_config(path: str | os.PathLike[str] | None = None, *, secrets: bool = True) -> DeployConfig:
    """Read and validate the config file; raise ConfigError listing every problem.

    secrets=False (or never_read_secrets_file() earlier): secrets_file is not read into the environment;
    `deployhook up` applies it (apply_secrets_file) only once it has forked its workers.
    """
    source = config_path(path)
    name = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            name,
            [f"no such file; pass --config PATH or set {defaults.CONFIG_ENVVAR} (see examples/deploy.yml)"],
        ) from None
    except OSError as exc:
        raise ConfigError(name, [f"cannot read: {exc.strerror}"]) from None
    config = parse_config(text, source)
    if secrets and _SECRETS_FILE_READ:
        apply_secrets_file(config)
    return config


def apply_secrets_file(config: DeployConfig) -> None:
    """Set the secrets_file's variables in this process's environment, unless already set there.

    Refused when others may read it: it holds the webhook secret and the API token.
    """
    path = config.secrets_file
    if path is None:
        return
    field = f"secrets_file in {config.source}"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(str(path), [f"no such file ({field}); create it, or run `deployhook init`"]) from None
    if mode & 0o077:
        raise ConfigError(str(path), [f"readable by others (mode {mode & 0o777:o}; {field}); chmod 600 {path}"])
    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)


def parse_config(text: str, source: Path) -> DeployConfig:
    """Validate config text as if read from `source` (relative paths resolve against its directory)."""
    name = str(source)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(name, [_yaml_problem(exc)]) from None
    if not isinstance(data, Mapping):
        raise ConfigError(name, ["expected a mapping of settings at the top level (see examples/deploy.yml)"])
    data = {**data, "source": source}
    base_dir = source.parent.resolve()
    data = _interpolate_image_names(data, base_dir, name)
    try:
        return DeployConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(name, [format_error(error) for error in exc.errors()]) from None


def _interpolate_image_names(data: dict[str, Any], base_dir: Path, name: str) -> dict[str, Any]:
    """environments.*.images[].name written as the compose file writes it (`${DOCKER_USER}/app`), with the
    values Compose reads: the env file's, else the checkout's .env.example, and the environment's compose_env."""
    envs = data.get("environments")
    if not isinstance(envs, Mapping) or "$" not in str(envs):
        return data
    values = _interpolation_values(data, base_dir)
    problems, named = [], {}
    for env_name, env in envs.items():
        images = env.get("images") if isinstance(env, Mapping) else None
        if not isinstance(images, list):
            named[env_name] = env
            continue
        compose_env = env.get("compose_env") if isinstance(env.get("compose_env"), Mapping) else {}
        resolved = []
        for index, image in enumerate(images):
            if isinstance(image, Mapping) and isinstance(image.get("name"), str) and "$" in image["name"]:
                try:
                    image = {**image, "name": interpolate(image["name"], {**values, **compose_env})}
                except ValueError as exc:
                    problems.append(f"environments.{env_name}.images.{index}.name: {exc}")
            resolved.append(image)
        named[env_name] = {**env, "images": resolved}
    if problems:
        raise ConfigError(name, problems)
    return {**data, "environments": named}


def _interpolation_values(data: Mapping[str, Any], base_dir: Path) -> dict[str, str]:
    candidates = [data.get("env_file")]
    repository = data.get("repository")
    if isinstance(repository, Mapping) and isinstance(repository.get("checkout"), str):
        candidates.append(str(Path(repository["checkout"]) / ".env.example"))
    for candidate in candidates:
        path = base_dir / str(candidate) if candidate else None
        if path is not None and path.is_file():
            return read_env_file(path)
    return {}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}invalid YAML: {problem}"


def format_error(error: ErrorDetails) -> str:
    """`environments.production.health_url: not a URL: 'localhost:8080'` from a pydantic error."""
    loc = [str(part) for part in error["loc"]]
    path = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "extra_forbidden":
        allowed = _fields_at(error["loc"][:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown field{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return f"{path}: {message}"
    message = message[:1].lower() + message[1:]
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        message += f", got {value!r}"
    else:
        message += f", got a {_yaml_type(value)}"
    return f"{path}: {message}"


def _yaml_type(value: object) -> str:
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


# Fields the loader fills in, not the user: left out of the "expected one of" hint.
_FILLED_BY_LOADER: dict[type[BaseModel], tuple[str, ...]] = {DeployConfig: ("source",), EnvironmentConfig: ("name",)}


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names a model accepts at `loc`, walking the schema the way the data nests."""
    annotation: Any = DeployConfig
    for part in loc:
        model = _model_in(annotation)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            continue
        # Step into a dict value or list item; the key or index itself names no field.
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None) and arg is not Ellipsis]
        annotation = args[-1] if args else None
    model = _model_in(annotation)
    if model is None:
        return []
    internal = _FILLED_BY_LOADER.get(model, ())
    return [field for field in model.model_fields if field not in internal]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None
