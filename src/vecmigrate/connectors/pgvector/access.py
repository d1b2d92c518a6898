"""Access entries re-applied as GRANTs on a table (only on request: ``--apply-access``).

Every name is quoted by psycopg.sql; privileges are checked against PostgreSQL's table
privileges before they reach SQL. A grant that cannot be applied (a role the target does not
have, a privilege the server does not know, a grant the connected user may not give) is
reported with the reason, not raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from vecmigrate.connectors.base import AccessGrant, AccessReport
from vecmigrate.connectors.pgvector.errors import scrubbed
from vecmigrate.spec import AccessEntry

TABLE_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
)
PUBLIC = "PUBLIC"  # how the catalog (and describe) names the grant to everyone
_REFUSED_NOTICES = ("no privileges were granted", "not all privileges were granted")


def grant_entries(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    entries: Sequence[AccessEntry],
    *,
    secret: str | None = None,
) -> AccessReport:
    """GRANT each entry's privileges on ``schema.table``; one statement per privilege."""
    resource = f"{schema}.{table}"
    target = sql.Identifier(schema, table)
    grants: list[AccessGrant] = []
    notices: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    conn.add_notice_handler(on_notice)
    try:
        for entry in entries:
            grantee: sql.Composable = (
                sql.SQL(PUBLIC) if entry.principal == PUBLIC else sql.Identifier(entry.principal)
            )
            for name in dict.fromkeys(p.strip().upper() for p in entry.privileges):
                if name not in TABLE_PRIVILEGES:
                    reason: str | None = "not a PostgreSQL table privilege"
                else:
                    stmt = sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(name), target, grantee
                    )
                    notices.clear()
                    reason = _grant(conn, stmt, notices, secret)
                grants.append(AccessGrant(entry.principal, name, resource, reason is None, reason))
    finally:
        conn.remove_notice_handler(on_notice)
    return AccessReport(tuple(grants))


def _grant(
    conn: psycopg.Connection[Any], stmt: sql.Composed, notices: list[str], secret: str | None
) -> str | None:
    """Run one GRANT; why it was not applied, or None when it was."""
    try:
        conn.execute(stmt)
    except pgerr.UndefinedObject:
        return "the role does not exist on the target"
    except (pgerr.InsufficientPrivilege, pgerr.SyntaxError, pgerr.InvalidGrantOperation) as exc:
        return scrubbed(exc.diag.message_primary or str(exc), secret)
    refused = [n for n in notices if n.startswith(_REFUSED_NOTICES)]
    if refused:
        return f"the connected user may not grant it ({scrubbed(refused[0], secret)})"
    return None
