"""How commands speak: JSON for scripts, rich tables for people, one-line errors for both."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vecmigrate.uri import redact_text

stdout = Console()
stderr = Console(stderr=True)


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(redact_text(json.dumps(payload, indent=2, default=str)) + "\n")
    sys.stdout.flush()


def error(message: str, *, as_json: bool, kind: str, exit_code: int) -> None:
    """Report a failure on one line (stderr), and as JSON on stdout when asked."""
    line = redact_text(" ".join(message.split()))
    if as_json:
        emit_json({"ok": False, "error": kind, "message": line, "exit_code": exit_code})
    # the message is text, not markup: an id or path like "[/x]" must print as it is
    stderr.print(
        f"[bold red]error[/]: {escape(line)}", highlight=False, markup=True, soft_wrap=True
    )


def key_values(title: str, rows: list[tuple[str, Any]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(escape(key), escape(redact_text(str(value))))
    stdout.print(table)
