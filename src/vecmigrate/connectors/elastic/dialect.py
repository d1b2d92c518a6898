"""The small differences between Elasticsearch and OpenSearch: clients, PIT, bodies.

Everything else (mappings, scans, bulk bodies and their per-item errors) is shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vecmigrate.connectors.elastic.config import ElasticConfig
from vecmigrate.connectors.elastic.mapping import Dialect


def _plain(response: Any) -> dict[str, Any]:
    """A client response as a dict (elasticsearch-py wraps bodies in ObjectApiResponse)."""
    body = getattr(response, "body", response)
    return dict(body) if body is not None else {}


class ElasticsearchDialect:
    name: Dialect = "elasticsearch"
    shard_doc_tiebreak = True  # PIT searches can sort on _shard_doc (Elasticsearch >= 7.12)

    def client(self, config: ElasticConfig) -> Any:
        from elasticsearch import Elasticsearch

        kwargs: dict[str, Any] = {
            "hosts": [config.url],
            "request_timeout": config.timeout,
            "verify_certs": config.verify_certs,
        }
        if config.ca_certs:
            kwargs["ca_certs"] = config.ca_certs
        if config.api_key:
            kwargs["api_key"] = config.api_key
        elif config.user:
            kwargs["basic_auth"] = (config.user, config.password or "")
        return Elasticsearch(**kwargs)

    def supports_pit(self, version: tuple[int, int]) -> bool:
        return version >= (7, 12)

    def info(self, client: Any) -> dict[str, Any]:
        return _plain(client.info())

    def open_pit(self, client: Any, index: str, keep_alive: str) -> str:
        return str(_plain(client.open_point_in_time(index=index, keep_alive=keep_alive))["id"])

    def close_pit(self, client: Any, pit: str) -> None:
        client.close_point_in_time(id=pit)

    def search(self, client: Any, body: dict[str, Any], index: str | None) -> dict[str, Any]:
        kwargs = {("source" if k == "_source" else k): v for k, v in body.items()}
        if index is not None:
            kwargs["index"] = index
        return _plain(client.search(**kwargs))

    def scroll_start(
        self, client: Any, index: str, body: dict[str, Any], keep_alive: str
    ) -> dict[str, Any]:
        kwargs = {("source" if k == "_source" else k): v for k, v in body.items()}
        return _plain(client.search(index=index, scroll=keep_alive, **kwargs))

    def scroll_next(self, client: Any, scroll_id: str, keep_alive: str) -> dict[str, Any]:
        return _plain(client.scroll(scroll_id=scroll_id, scroll=keep_alive))

    def clear_scroll(self, client: Any, scroll_id: str) -> None:
        client.clear_scroll(scroll_id=scroll_id)

    def bulk(self, client: Any, operations: list[dict[str, Any]]) -> dict[str, Any]:
        return _plain(client.bulk(operations=operations))

    def mget(self, client: Any, index: str, ids: Sequence[str]) -> dict[str, Any]:
        return _plain(client.mget(index=index, ids=list(ids)))

    def count(self, client: Any, index: str) -> int:
        return int(_plain(client.count(index=index))["count"])

    def refresh(self, client: Any, index: str) -> None:
        client.indices.refresh(index=index)

    def exists(self, client: Any, index: str) -> bool:
        return bool(client.indices.exists(index=index))

    def create_index(self, client: Any, index: str, body: dict[str, Any]) -> None:
        client.indices.create(index=index, settings=body["settings"], mappings=body["mappings"])

    def delete_index(self, client: Any, index: str) -> None:
        client.indices.delete(index=index)

    def get_mapping(self, client: Any, index: str) -> dict[str, Any]:
        return _plain(client.indices.get_mapping(index=index))

    def knn_body(
        self, field: str, vector: list[float], k: int, fields: list[str]
    ) -> dict[str, Any]:
        return {
            "knn": {
                "field": field,
                "query_vector": vector,
                "k": k,
                "num_candidates": max(100, 10 * k),
            },
            "size": k,
            "_source": fields or False,
        }


class OpenSearchDialect(ElasticsearchDialect):
    name: Dialect = "opensearch"
    shard_doc_tiebreak = False  # no _shard_doc: PIT needs a unique sort field, else scroll

    def client(self, config: ElasticConfig) -> Any:
        from opensearchpy import OpenSearch

        kwargs: dict[str, Any] = {
            "hosts": [config.url],
            "timeout": config.timeout,
            "use_ssl": config.url.startswith("https://"),
            "verify_certs": config.verify_certs,
        }
        if config.ca_certs:
            kwargs["ca_certs"] = config.ca_certs
        if config.user:
            kwargs["http_auth"] = (config.user, config.password or "")
        return OpenSearch(**kwargs)

    def supports_pit(self, version: tuple[int, int]) -> bool:
        return version >= (2, 4)

    def open_pit(self, client: Any, index: str, keep_alive: str) -> str:
        return str(client.create_pit(index=index, keep_alive=keep_alive)["pit_id"])

    def close_pit(self, client: Any, pit: str) -> None:
        client.delete_pit(body={"pit_id": [pit]})

    def search(self, client: Any, body: dict[str, Any], index: str | None) -> dict[str, Any]:
        if index is None:
            return dict(client.search(body=body))
        return dict(client.search(index=index, body=body))

    def scroll_start(
        self, client: Any, index: str, body: dict[str, Any], keep_alive: str
    ) -> dict[str, Any]:
        return dict(client.search(index=index, body=body, scroll=keep_alive))

    def scroll_next(self, client: Any, scroll_id: str, keep_alive: str) -> dict[str, Any]:
        return dict(client.scroll(body={"scroll_id": scroll_id, "scroll": keep_alive}))

    def clear_scroll(self, client: Any, scroll_id: str) -> None:
        client.clear_scroll(body={"scroll_id": [scroll_id]})

    def bulk(self, client: Any, operations: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(client.bulk(body=operations))

    def mget(self, client: Any, index: str, ids: Sequence[str]) -> dict[str, Any]:
        return dict(client.mget(index=index, body={"ids": list(ids)}))

    def count(self, client: Any, index: str) -> int:
        return int(client.count(index=index)["count"])

    def create_index(self, client: Any, index: str, body: dict[str, Any]) -> None:
        client.indices.create(index=index, body=body)

    def get_mapping(self, client: Any, index: str) -> dict[str, Any]:
        return dict(client.indices.get_mapping(index=index))

    def knn_body(
        self, field: str, vector: list[float], k: int, fields: list[str]
    ) -> dict[str, Any]:
        return {
            "size": k,
            "query": {"knn": {field: {"vector": vector, "k": k}}},
            "_source": fields or False,
        }
