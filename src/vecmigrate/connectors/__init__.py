"""Connectors: one package per system, found by URI scheme."""

from vecmigrate.connectors.base import (
    AccessGrant,
    AccessReport,
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    RejectedRow,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.registry import connect, known_schemes, register

__all__ = [
    "AccessGrant",
    "AccessReport",
    "Capabilities",
    "Connector",
    "IfExists",
    "Partition",
    "QueryResult",
    "RejectedRow",
    "ScanBatch",
    "WriteToken",
    "connect",
    "known_schemes",
    "register",
]
