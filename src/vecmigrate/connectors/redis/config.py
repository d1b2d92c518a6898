"""Options of ``redis://[USER@]HOST[:PORT]?key=K[&db=N&quant=noquant&m=16&ef=200...]``.

The password comes from ``?password_env=VAR``, ``?password_file=PATH`` or ``REDISCLI_AUTH``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vecmigrate.errors import ConfigError
from vecmigrate.uri import ConnectorURI, secret

DEFAULT_PORT = 6379
QUANTS = {"noquant": "NOQUANT", "f32": "NOQUANT", "q8": "Q8", "int8": "Q8", "bin": "BIN"}
"""URI spellings (and VINFO quant-type names) -> VADD flags."""


@dataclass(frozen=True)
class RedisConfig:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    key: str
    quant: str | None  # VADD flag for new sets (NOQUANT, Q8, BIN); None: from the spec
    m: int | None  # HNSW links per node for new sets; None: Redis's default (16)
    build_ef: int | None  # EF while inserting; None: Redis's default (200)
    query_ef: int | None  # EF while searching; None: Redis's default
    exact: bool  # kNN by linear scan (VSIM ... TRUTH) instead of the HNSW graph
    cas: bool  # insert with CAS: neighbour search in a Redis thread
    pipeline: int  # commands per round trip
    timeout: float  # socket timeout, seconds

    @property
    def spec_key(self) -> str:
        """The string key holding the collection's spec as JSON, beside the vector set."""
        return f"{self.key}:vecmigrate:spec"

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> RedisConfig:
        uri.check_options(
            {"key", "db", "quant", "m", "ef", "query_ef", "exact", "cas", "pipeline", "timeout"}
        )
        host, port = uri.address(DEFAULT_PORT)
        quant_name = uri.option("quant")
        quant = None
        if quant_name is not None:
            quant = QUANTS.get(quant_name.lower())
            if quant is None:
                raise ConfigError(f"redis:// option quant={quant_name!r}: use noquant, q8 or bin")
        pipeline = uri.int_option("pipeline", 1000)
        if pipeline < 1:
            raise ConfigError("redis:// option pipeline must be at least 1")
        try:
            timeout = float(uri.option("timeout") or 30.0)
        except ValueError as exc:
            raise ConfigError(f"redis:// option timeout={uri.option('timeout')!r}") from exc
        return cls(
            host=host,
            port=port,
            db=uri.int_option("db", 0),
            username=uri.user,
            password=secret(uri, "password", env_default="REDISCLI_AUTH"),
            key=uri.require("key", "the vector set's key"),
            quant=quant,
            m=_positive(uri, "m"),
            build_ef=_positive(uri, "ef"),
            query_ef=_positive(uri, "query_ef"),
            exact=_flag(uri, "exact"),
            cas=_flag(uri, "cas"),
            pipeline=pipeline,
            timeout=timeout,
        )


def _positive(uri: ConnectorURI, name: str) -> int | None:
    if uri.option(name) is None:
        return None
    value = uri.int_option(name, 0)
    if value < 1:
        raise ConfigError(f"redis:// option {name} must be a positive whole number")
    return value


def _flag(uri: ConnectorURI, name: str) -> bool:
    raw = (uri.option(name) or "false").lower()
    if raw not in {"1", "0", "true", "false", "yes", "no"}:
        raise ConfigError(f"redis:// option {name}={raw!r}: use true or false")
    return raw in {"1", "true", "yes"}
