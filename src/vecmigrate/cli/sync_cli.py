"""``vecmigrate sync SOURCE TARGET``: snapshot, then follow the source's changes."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from vecmigrate.cli import output


def sync(
    source: Annotated[
        str, typer.Argument(help="Source URI with a change feed (see `vecmigrate systems`)")
    ],
    target: Annotated[str, typer.Argument(help="Target URI")],
    cdc: Annotated[
        str | None,
        typer.Option(
            "--cdc",
            help="Change source: logical (a replication slot) or trigger (pgvector), lance "
            "(table version diff, LanceDB), poll (an updated-at/version field, --poll-field). "
            "Default: the source's first.",
        ),
    ] = None,
    poll_field: Annotated[
        str | None,
        typer.Option(
            "--poll-field",
            help="--cdc poll: the metadata field every write sets to a value not below any "
            "earlier one (updated_at, a version number).",
        ),
    ] = None,
    tombstone_field: Annotated[
        str | None,
        typer.Option(
            "--tombstone-field",
            help="--cdc poll: a bool/int field; a row with a true value is deleted in the target.",
        ),
    ] = None,
    id_diff_every: Annotated[
        float | None,
        typer.Option(
            "--id-diff-every",
            min=0,
            help="--cdc poll: seconds between diffs of the source's and target's id sets, which "
            "delete what the source no longer has (0: every poll, e.g. with --once).",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Catch up to the source's current position and exit.")
    ] = False,
    cleanup: Annotated[
        bool, typer.Option("--cleanup", help="Drop the slot/trigger and the sync state, then exit.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 5_000,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 2,
    restart: Annotated[bool, typer.Option("--restart", help="Forget the sync state.")] = False,
    state_dir: Annotated[Path, typer.Option("--state-dir", envvar="VECMIGRATE_STATE_DIR")] = Path(
        ".vecmigrate"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Copy a snapshot, then apply inserts, updates and deletes until stopped (SIGINT/SIGTERM)."""
    from vecmigrate.cdc.sync import CHANGE_FEEDS, SyncJob, SyncOptions
    from vecmigrate.cli.app import _run
    from vecmigrate.uri import ConnectorURI

    if cdc is None:
        scheme = _run(as_json, lambda: ConnectorURI.parse(source).scheme)
        cdc = CHANGE_FEEDS.get(scheme, ("logical",))[0]
    options = SyncOptions(
        cdc=cdc, once=once, batch_size=batch_size, workers=workers, state_dir=state_dir,
        restart=restart, poll_field=poll_field, tombstone_field=tombstone_field,
        id_diff_every=id_diff_every,
    )  # fmt: skip
    job = SyncJob(source, target, options)
    if cleanup:
        done = _run(as_json, job.cleanup)
        if as_json:
            output.emit_json({"command": "sync", **done})
        else:
            output.stderr.print(f"sync: dropped change capture for {done['cleaned']}")
        return

    def progress(info: dict[str, Any]) -> None:
        if not quiet:
            output.stderr.print(
                f"sync: {info['changes']:,} changes applied, lag {info['lag_s']:.2f}s",
                highlight=False,
            )

    def stop(signum: int, frame: object) -> None:
        job.stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = _run(as_json, lambda: job.run(progress))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if as_json:
        output.emit_json({"command": "sync", **result.as_dict()})
    else:
        output.key_values(
            "vecmigrate sync",
            [
                ("source", result.source),
                ("target", result.target),
                ("snapshot", result.snapshot or "already done"),
                ("changes applied", f"{result.changes_applied:,}"),
                ("lag", f"{result.lag_s:.2f}s"),
                ("backlog", result.backlog),
                ("ended", result.stopped),
            ],
        )
