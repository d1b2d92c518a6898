"""Pre-flight checks of both sides: reachable, feature parity, and drift of an existing target.

Shared by ``vecmigrate plan`` (which reports) and the ``preflight`` step (which refuses to go
on while a blocking problem remains).
"""

from __future__ import annotations

from typing import Any

from vecmigrate.cdc.sync import CHANGE_FEEDS
from vecmigrate.connectors.base import Connector
from vecmigrate.connectors.registry import connect
from vecmigrate.engine.mapping import map_spec
from vecmigrate.errors import Unsupported, VecmigrateError
from vecmigrate.plan.model import BlueGreen, Phased, Plan
from vecmigrate.spec import CollectionSpec
from vecmigrate.uri import ConnectorURI


def supports_alias(conn: Connector) -> bool:
    return callable(getattr(conn, "switch_alias", None))


def _count(conn: Connector) -> int | None:
    try:
        return conn.count()
    except Unsupported:
        return None


def spec_drift(planned: CollectionSpec, existing: CollectionSpec) -> list[dict[str, Any]]:
    """How an existing target differs from the spec the plan would create (blocking or not)."""
    drift: list[dict[str, Any]] = []

    def add(what: str, plan: Any, have: Any, blocking: bool) -> None:
        drift.append({"what": what, "plan": plan, "target": have, "blocking": blocking})

    if planned.id_type != existing.id_type:
        add("id type", planned.id_type, existing.id_type, True)
    have_vectors = {v.name: v for v in existing.vectors}
    for vf in planned.vectors:
        other = have_vectors.get(vf.name)
        if other is None:
            add(f"vector {vf.name}", f"dim {vf.dim}", "missing", True)
            continue
        if other.dim != vf.dim:
            add(f"vector {vf.name} dimension", vf.dim, other.dim, True)
        if other.metric != vf.metric:
            add(f"vector {vf.name} metric", vf.metric.value, other.metric.value, True)
        if other.dtype != vf.dtype:
            add(f"vector {vf.name} dtype", vf.dtype, other.dtype, False)
    have_meta = {m.name: m for m in existing.metadata}
    for m in planned.metadata:
        other_m = have_meta.get(m.name)
        if other_m is None:
            add(f"metadata {m.name}", m.type.value, "missing", True)
        elif other_m.type != m.type:
            add(f"metadata {m.name} type", m.type.value, other_m.type.value, False)
    for name in sorted(set(have_meta) - {m.name for m in planned.metadata}):
        add(f"metadata {name}", "absent", have_meta[name].type.value, False)
    if planned.has_document and not existing.has_document:
        add("document", "kept", "missing", True)
    planned_ix = {(i.field, i.kind, repr(sorted(i.params.items()))) for i in planned.indexes}
    have_ix = {(i.field, i.kind, repr(sorted(i.params.items()))) for i in existing.indexes}
    if planned.indexes and planned_ix != have_ix:
        add(
            "indexes",
            sorted(f"{f} {k}" for f, k, _ in planned_ix),
            sorted(f"{f} {k}" for f, k, _ in have_ix),
            False,
        )
    return drift


def inspect_sides(plan: Plan, source_spec_hook: Any = None) -> dict[str, Any]:
    """Connect to both sides and say what would block the plan (``problems``) and what not."""
    problems: list[str] = []
    notes: list[str] = []
    out: dict[str, Any] = {"problems": problems, "notes": notes}
    try:
        with connect(plan.source) as source:
            spec = source.describe()
            out["source"] = {
                "uri": source.uri.redacted(),
                "reachable": True,
                "count": _count(source),
                "dim": spec.vector().dim if spec.vectors else None,
                "metric": spec.vector().metric.value if spec.vectors else None,
                "metadata": {m.name: m.type.value for m in spec.metadata},
                "capabilities": source.capabilities.as_dict(),
            }
            source_caps = source.capabilities
    except VecmigrateError as exc:
        out["source"] = {
            "uri": ConnectorURI.parse(plan.source).redacted(),
            "reachable": False,
            "error": exc.one_line(),
        }
        problems.append(f"source unreachable: {exc.one_line()}")
        return out
    shaped = source_spec_hook(spec) if source_spec_hook is not None else spec
    try:
        with connect(plan.target) as target:
            caps = target.capabilities
            planned, report = map_spec(shaped, caps, target=target.uri.scheme)
            exists = target.exists()
            info: dict[str, Any] = {
                "uri": target.uri.redacted(),
                "reachable": True,
                "exists": exists,
                "alias_support": supports_alias(target),
            }
            if exists:
                info["count"] = _count(target)
                drift = spec_drift(planned, target.describe())
                info["drift"] = drift
                blocking = [d for d in drift if d["blocking"]]
                if blocking and plan.mapping.if_exists != "replace":
                    problems.append(
                        "the existing target does not fit the plan: "
                        + "; ".join(
                            f"{d['what']}: plan {d['plan']}, target {d['target']}" for d in blocking
                        )
                        + " (set mapping.if_exists: replace to recreate it; it is backed up first)"
                    )
                if plan.mapping.if_exists == "fail":
                    problems.append("the target exists and mapping.if_exists is fail")
            out["target"] = info
            out["mapping"] = report.as_dict()
            out["planned_spec"] = planned.to_dict()
    except VecmigrateError as exc:
        out["target"] = {
            "uri": ConnectorURI.parse(plan.target).redacted(),
            "reachable": False,
            "error": exc.one_line(),
        }
        problems.append(f"target unreachable or unfit: {exc.one_line()}")
        return out
    settings = ("partitions", "aliases", "access-control")
    lost_data = [x for x in report.lost if not x.startswith(settings)]
    notes += [
        f"not carried (recreate by hand if needed): {x}"
        for x in report.lost
        if x.startswith(settings)
    ]
    if lost_data and not plan.mapping.allow_loss:
        problems.append(
            "the target cannot hold: "
            + "; ".join(lost_data)
            + " (set mapping.allow_loss: true to accept)"
        )
    strategy = plan.strategy
    if plan.kind in ("parallel-run", "phased"):
        if not (source_caps.query and caps.query):
            problems.append(f"{plan.kind} needs kNN queries on both sides for shadow parity")
        if not (source_caps.delete and caps.delete):
            notes.append("a side cannot delete: deletes routed through the router will fail")
    if isinstance(strategy, Phased):
        field = strategy.segment_field
        if field != "id" and spec.metadata_field(field) is None:
            problems.append(
                f"segment field {field!r} is not a metadata field of the source (it has: "
                f"{', '.join(m.name for m in spec.metadata) or 'none'})"
            )
        elif field != "id" and planned.metadata_field(field) is None:
            problems.append(f"the target would not keep the segment field {field!r}")
    if isinstance(strategy, BlueGreen):
        if strategy.alias and not info["alias_support"]:
            notes.append(
                f"{ConnectorURI.parse(plan.target).scheme}:// has no aliases here: traffic "
                "switches through the router state"
            )
        scheme = ConnectorURI.parse(plan.source).scheme
        kinds = CHANGE_FEEDS.get(scheme, ())
        if strategy.sync != "none" and strategy.sync not in kinds:
            problems.append(
                f"sync: {strategy.sync} needs a source with that change feed; "
                + (
                    f"{scheme}:// offers {', '.join(kinds)}"
                    if kinds
                    else f"{scheme}:// has none (sources with one: {', '.join(CHANGE_FEEDS)})"
                )
            )
        if strategy.sync == "poll" and not strategy.poll_field:
            problems.append("sync: poll needs poll_field (the updated-at / version field)")
    if not source_caps.query or not caps.query:
        notes.append("a side cannot answer kNN queries: validation skips query parity")
    return out
