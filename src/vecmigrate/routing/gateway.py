"""``vecmigrate serve``: the Router as a small REST API with Prometheus metrics.

For applications not written in Python. OpenAPI schema at ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model

from vecmigrate.connectors.registry import connect_writer
from vecmigrate.errors import ConfigError, ConnectorError, DataError
from vecmigrate.records import check_batch, conform
from vecmigrate.routing.phase import Phase
from vecmigrate.routing.router import Router, RouterConfig
from vecmigrate.routing.triggers import TriggerConfig
from vecmigrate.spec import CollectionSpec


class GatewayConfig(BaseModel):
    """The file given to ``vecmigrate serve``: two URIs, a state file, trigger bounds."""

    model_config = ConfigDict(extra="forbid")
    old: str
    new: str
    state: Path
    host: str = "127.0.0.1"
    port: int = 8780
    max_error_rate: float | None = 0.05
    max_latency_ratio: float | None = 3.0
    min_parity: float | None = 0.9
    max_count_drift: float | None = 0.01
    window_s: float = 30.0
    min_samples: int = 20
    # GIL switch interval for the gateway process (None: Python's 5 ms); see RouterConfig
    switch_interval_s: float | None = Field(default=None, gt=0)

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        import yaml

        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read gateway config {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"gateway config {path} must be a mapping")
        base = path.parent
        cfg = cls.model_validate(raw)
        if not cfg.state.is_absolute():
            cfg.state = base / cfg.state
        return cfg

    def triggers(self) -> TriggerConfig:
        return TriggerConfig(
            max_error_rate=self.max_error_rate,
            max_latency_ratio=self.max_latency_ratio,
            min_parity=self.min_parity,
            max_count_drift=self.max_count_drift,
            window_s=self.window_s,
            min_samples=self.min_samples,
        )


FLOAT32_MAX = 3.4028234e38
# integers a JSON number holds exactly everywhere (JavaScript, schema tools: doubles); beyond
# +-(2**53 - 1) they round, so larger int64 values go through the Python Router instead
JSON_INT_MAX = 2**53 - 1
Int64 = Annotated[int, Field(ge=-JSON_INT_MAX, le=JSON_INT_MAX)]

_PY_TYPES: dict[str, Any] = {
    "string": str, "int64": Int64, "float64": float, "bool": bool, "timestamp": str, "json": str,
    "list<string>": list[str], "list<int64>": list[Int64], "list<float64>": list[float],
}  # fmt: skip


def _models(
    spec: CollectionSpec,
) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel], type[BaseModel]]:
    """Request models whose schema states this collection's id type, dimension and fields."""
    dim = spec.vector().dim
    component = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
    vector_t = Annotated[list[component], Field(min_length=dim, max_length=dim)]  # type: ignore[valid-type]
    id_t: Any = Int64 if spec.id_type == "int64" else Annotated[str, Field(min_length=1)]
    meta_fields: dict[str, Any] = {
        m.name: (_PY_TYPES[m.type.value] | None, None) for m in spec.metadata
    }
    strict = ConfigDict(extra="forbid")
    metadata = create_model("Metadata", __config__=strict, **meta_fields)
    record_fields: dict[str, Any] = {
        "id": (id_t, ...),
        "vector": (vector_t, ...),
        "metadata": (metadata | None, None),
    }
    if spec.has_document:
        record_fields["document"] = (str | None, None)
    record = create_model("Record", __config__=strict, **record_fields)
    upsert = create_model(
        "UpsertBody", __config__=strict,
        records=(Annotated[list[record], Field(min_length=1, max_length=10_000)], ...),  # type: ignore[valid-type]
    )  # fmt: skip
    delete = create_model(
        "DeleteBody", __config__=strict,
        ids=(Annotated[list[id_t], Field(min_length=1, max_length=10_000)], ...),
    )  # fmt: skip
    query = create_model(
        "QueryBody", __config__=strict,
        vector=(vector_t, ...),
        k=(Annotated[int, Field(ge=1, le=1_000)], 10),
        segment=(str | None, None),
        request_key=(str | None, None),
    )  # fmt: skip
    return record, upsert, delete, query


class QueryAnswer(BaseModel):
    ids: list[str | int]
    scores: list[float]
    phase: str


class PhaseBody(BaseModel):
    phase: str
    percent: float | None = Field(default=None, ge=0, le=100)
    segments: list[str] | None = None
    force: bool = False


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the request's data does not fit the collection"},
    409: {"model": Problem, "description": "the phase change is out of order"},
    503: {"model": Problem, "description": "a side failed; the write was not accepted"},
}


class Done(BaseModel):
    ok: bool = True
    rows: int = 0


def _to_batch(records: list[Any], spec: CollectionSpec) -> pa.RecordBatch:
    """Records as one batch; a repeated id keeps its last record, as upserts in order would."""
    records = list({r.id: r for r in records}.values())
    vf = spec.vector()
    cols: dict[str, Any] = {"id": [r.id for r in records], vf.name: [r.vector for r in records]}
    if spec.has_document:
        cols["document"] = [r.document for r in records]
    for m in spec.metadata:
        cols[m.name] = [getattr(r.metadata, m.name, None) if r.metadata else None for r in records]
    try:
        raw = pa.RecordBatch.from_pydict(cols)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise DataError(f"records do not fit the collection: {exc}") from exc
    batch = conform(raw, spec)
    check_batch(batch, spec)
    return batch


def create_app(router: Router, spec: CollectionSpec) -> Any:
    """The FastAPI application serving ``router``."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import PlainTextResponse
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    app = FastAPI(title="vecmigrate gateway", version="1")
    _, upsert_body, delete_body, query_body = _models(spec)

    def route(
        path: str, body_model: type[BaseModel], response: type[BaseModel]
    ) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
        """Register a POST route whose body model is built at run time for this collection."""

        def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
            fn.__annotations__ = {"body": body_model, "return": response}
            app.post(path, response_model=response, responses=ERRORS)(fn)
            return fn

        return register

    def guarded(fn: Any) -> Any:
        try:
            return fn()
        except DataError as exc:
            raise HTTPException(status_code=400, detail=exc.one_line()) from exc
        except ConfigError as exc:
            raise HTTPException(status_code=409, detail=exc.one_line()) from exc
        except ConnectorError as exc:
            raise HTTPException(status_code=503, detail=exc.one_line()) from exc

    @route("/upsert", upsert_body, Done)
    def upsert(body: Any) -> Done:
        batch = guarded(lambda: _to_batch(body.records, spec))
        guarded(lambda: router.upsert(batch))
        return Done(rows=batch.num_rows)

    @route("/delete", delete_body, Done)
    def delete(body: Any) -> Done:
        ids = list(body.ids)
        guarded(lambda: router.delete(ids))
        return Done(rows=len(ids))

    @route("/query", query_body, QueryAnswer)
    def query(body: Any) -> QueryAnswer:
        q = np.asarray([body.vector], dtype=np.float32)
        if not np.isfinite(q).all():
            raise HTTPException(status_code=400, detail="vector contains NaN or inf")
        res = guarded(
            lambda: router.query(q, body.k, segment=body.segment, request_key=body.request_key)
        )
        return QueryAnswer(
            ids=list(res.ids[0]), scores=[float(s) for s in res.scores[0]], phase=router.phase.value
        )

    @app.get("/phase")
    def get_phase() -> dict[str, Any]:
        return router.metrics()

    @app.post("/phase", responses=ERRORS)
    def set_phase(body: PhaseBody) -> dict[str, Any]:
        def change() -> None:
            router.set_phase(
                Phase.parse(body.phase),
                percent=body.percent,
                segments=body.segments,
                actor="gateway",
                force=body.force,
            )

        guarded(change)
        return router.metrics()

    @app.post("/rollback", responses=ERRORS)
    def rollback() -> dict[str, Any]:
        router.rollback(actor="gateway")
        return router.metrics()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "phase": router.phase.value}

    class _Collector:
        def collect(self) -> Any:
            m = router.metrics()
            phase = GaugeMetricFamily(
                "vecmigrate_phase", "current phase (1 for the active one)", labels=["phase"]
            )
            for p in Phase:
                phase.add_metric([p.value], 1.0 if p.value == m["phase"] else 0.0)
            yield phase
            pending = GaugeMetricFamily(
                "vecmigrate_pending_rows", "writes waiting for a side (lag)", labels=["side"]
            )
            for side in ("old", "new"):
                pending.add_metric([side], float(m["pending"][side]["rows"]))
            yield pending
            lat = GaugeMetricFamily(
                "vecmigrate_latency_p95_seconds", "p95 query latency per side", labels=["side"]
            )
            for side, v in m["latency_p95_ms"].items():
                if v is not None:
                    lat.add_metric([side], v / 1e3)
            yield lat
            ops = GaugeMetricFamily(
                "vecmigrate_operations", "operations and errors per side", labels=["side", "kind"]
            )
            for key, value in m["totals"].items():
                side, _, kind = key.partition("_")
                ops.add_metric([side, kind], float(value))
            yield ops
            if m["parity_mean_overlap"] is not None:
                yield GaugeMetricFamily(
                    "vecmigrate_parity_overlap",
                    "mean shadow overlap@k",
                    value=m["parity_mean_overlap"],
                )

    registry = CollectorRegistry()
    registry.register(_Collector())  # type: ignore[arg-type]

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return generate_latest(registry).decode()

    return app


def open_gateway(cfg: GatewayConfig) -> tuple[Any, Router]:
    old, new = connect_writer(cfg.old), connect_writer(cfg.new)  # a GIL-holding side in a child
    spec = old.describe()
    router = Router(
        old,
        new,
        RouterConfig(
            state_path=cfg.state,
            triggers=cfg.triggers(),
            switch_interval_s=cfg.switch_interval_s,
        ),
    )
    return create_app(router, spec), router
