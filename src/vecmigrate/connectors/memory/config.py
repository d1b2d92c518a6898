"""Options of ``memory://NAME?fail_every=N&partitions=P``."""

from __future__ import annotations

from dataclasses import dataclass

from vecmigrate.uri import ConnectorURI


@dataclass(frozen=True)
class MemoryConfig:
    name: str
    fail_every: int  # raise a TransientError on every Nth upsert (fault injection), 0 = never
    metric: str | None

    @classmethod
    def from_uri(cls, uri: ConnectorURI) -> MemoryConfig:
        uri.check_options({"fail_every", "metric"})
        name = ((uri.host or "") + uri.path).strip("/")
        return cls(
            name=name or "default",
            fail_every=uri.int_option("fail_every", 0),
            metric=uri.option("metric"),
        )
