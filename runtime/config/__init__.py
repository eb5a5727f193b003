"""The traffic manager's configuration: schema, typed model and the on-disk store."""

from __future__ import annotations

from lockgate.runtime.config.model import (
    Config,
    Monitor,
    Node,
    Pool,
    TrafficIpGroup,
    VirtualServer,
)
from lockgate.runtime.config.schema import KINDS, ConfigError
from lockgate.runtime.config.store import ConfigNotFound, ConfigStore, read_config_file

__all__ = [
    "KINDS",
    "Config",
    "ConfigError",
    "ConfigNotFound",
    "ConfigStore",
    "Monitor",
    "Node",
    "Pool",
    "TrafficIpGroup",
    "VirtualServer",
    "read_config_file",
]
