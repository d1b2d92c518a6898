"""vecmigrate: move vector collections between systems safely, resumably, and verifiably."""

from vecmigrate.errors import (
    ConfigError,
    ConnectorError,
    DataError,
    TerminalError,
    TransientError,
    ValidationFailed,
    VecmigrateError,
)
from vecmigrate.spec import CollectionSpec, MetadataField, MetadataType, Metric, VectorField

__version__ = "0.1.0"

__all__ = [
    "CollectionSpec",
    "ConfigError",
    "ConnectorError",
    "DataError",
    "MetadataField",
    "MetadataType",
    "Metric",
    "TerminalError",
    "TransientError",
    "ValidationFailed",
    "VecmigrateError",
    "VectorField",
    "__version__",
]
