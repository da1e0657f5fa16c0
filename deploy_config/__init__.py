"""deploy_config: the deploy config's schema and loading, and the isolation lint."""

from .errors import ConfigError, DeployError
from .loading import config_path, load_config, parse_config
from .schema import DeployConfig, EnvironmentConfig, ImageConfig, ServiceLimits

__all__ = [
    "ConfigError",
    "DeployConfig",
    "DeployError",
    "EnvironmentConfig",
    "ImageConfig",
    "ServiceLimits",
    "config_path",
    "load_config",
    "parse_config",
]
