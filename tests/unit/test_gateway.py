"""The HTTP gateway: routes, metrics, and a schemathesis run against its own OpenAPI schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import schemathesis
from fastapi.testclient import TestClient

from tests.datagen import make_batch, make_spec
from vecmigrate.connectors import connect
from vecmigrate.connectors.memory.connector import MemoryStore
from vecmigrate.routing import Router, RouterConfig, TriggerConfig
from vecmigrate.routing.gateway import create_app

SPEC = make_spec(dim=4, documents=True)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Any, Router]]:
    MemoryStore.put("old", SPEC, pa.Table.from_batches([make_batch(SPEC, 0, 50)]))
    MemoryStore.put("new", SPEC, pa.Table.from_batches([make_batch(SPEC, 0, 50)]))
    router = Router(
        connect("memory://old"),
        connect("memory://new"),
        RouterConfig(
            state_path=tmp_path / "gw.sqlite", triggers=TriggerConfig(max_count_drift=None)
        ),
    )
    yield create_app(router, SPEC), router
    router.close()


def test_routes_and_metrics(gateway: tuple[Any, Router]) -> None:
    app, router = gateway
    client = TestClient(app)
    assert client.post("/phase", json={"phase": "dual-write"}).status_code == 200
    rec = {"id": "new-1", "vector": [0.1, 0.2, 0.3, 0.4], "document": "hello",
           "metadata": {"category": "x", "rank": 3, "score": 1.5, "active": True}}  # fmt: skip
    assert client.post("/upsert", json={"records": [rec]}).json() == {"ok": True, "rows": 1}
    bad = client.post("/upsert", json={"records": [{**rec, "vector": [1.0, 2.0]}]})
    assert bad.status_code == 422 and "at least 4" in bad.text
    bad_meta = client.post("/upsert", json={"records": [{**rec, "metadata": {"nope": 1}}]})
    assert bad_meta.status_code == 422 and "nope" in bad_meta.text
    answer = client.post("/query", json={"vector": [0.1, 0.2, 0.3, 0.4], "k": 3}).json()
    assert answer["ids"][0] == "new-1" and answer["phase"] == "dual-write"
    assert router.flush(10)
    assert MemoryStore.collections["new"].table.num_rows == 51
    text = client.get("/metrics").text
    assert 'vecmigrate_phase{phase="dual-write"} 1.0' in text
    assert "vecmigrate_pending_rows" in text
    wrong = client.post("/phase", json={"phase": "new-only"})
    assert wrong.status_code == 409 and "next phase" in wrong.json()["detail"]


def test_gateway_conforms_to_its_openapi_schema(gateway: tuple[Any, Router]) -> None:
    app, _ = gateway
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for op in schema.get_all_operations():
        operation = op.ok()
        strategy = operation.as_strategy()
        from hypothesis import HealthCheck, given, settings

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, (case.method, case.path, response.text)
            case.validate_response(response)

        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, failures[:3]
