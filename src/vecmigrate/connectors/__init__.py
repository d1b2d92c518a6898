"""Connectors: one package per system, found by URI scheme."""

from vecmigrate.connectors.base import (
    Capabilities,
    Connector,
    IfExists,
    Partition,
    QueryResult,
    ScanBatch,
    WriteToken,
)
from vecmigrate.connectors.registry import connect, known_schemes, register

__all__ = [
    "Capabilities",
    "Connector",
    "IfExists",
    "Partition",
    "QueryResult",
    "ScanBatch",
    "WriteToken",
    "connect",
    "known_schemes",
    "register",
]
