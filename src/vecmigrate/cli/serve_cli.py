"""``vecmigrate serve CONFIG``: run the routing gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vecmigrate.errors import MissingDependency


def serve(
    config: Annotated[Path, typer.Argument(help="Gateway config (YAML): old, new, state, bounds")],
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address (default from config).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default from config).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the listening address as JSON on start.")
    ] = False,
) -> None:
    """Serve the dual-write router as a REST API (OpenAPI at /docs) with /metrics."""
    from vecmigrate.cli.app import _run
    from vecmigrate.routing.gateway import GatewayConfig, open_gateway

    def start() -> None:
        try:
            import uvicorn
        except ImportError as exc:
            raise MissingDependency("uvicorn", "serve") from exc
        cfg = GatewayConfig.load(config)
        app, router = open_gateway(cfg)
        bind_host, bind_port = host or cfg.host, port or cfg.port
        if as_json:
            from vecmigrate.cli import output

            output.emit_json(
                {"command": "serve", "ok": True, "url": f"http://{bind_host}:{bind_port}",
                 "phase": router.phase.value}
            )  # fmt: skip
        try:
            uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning")
        finally:
            router.close()
            for side in router.sides.values():
                side.close()  # a side in a process of its own stops it

    _run(as_json, start)
