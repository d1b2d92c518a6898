"""Run a copy's partitions as Ray tasks; the driver's ledger stays the source of truth.

Each task copies a slice of one partition (a few batches from its committed cursor) and
returns the new cursor, rows and content hash; the driver commits that to the ledger and
submits the next slice. A lost worker or a crashed driver therefore loses at most the slices
in flight, which are re-sent from the committed cursor and absorbed by idempotent writes, and
a run can move between the local and the Ray executor at any point.
"""

from __future__ import annotations

from typing import Any

from vecmigrate.engine.ledger import Ledger, PartitionState
from vecmigrate.errors import MissingDependency, VecmigrateError

SLICE_BATCHES = 8


def _copy_slice(
    source: str, target: str, options: dict[str, Any], run: dict[str, Any], state: dict[str, Any]
) -> dict[str, Any]:
    """In a Ray worker: copy up to SLICE_BATCHES batches of one partition."""
    from vecmigrate.connectors.base import Partition
    from vecmigrate.connectors.registry import connect
    from vecmigrate.engine.copy import CopyJob, CopyOptions, _Run
    from vecmigrate.spec import CollectionSpec

    job = CopyJob(source, target, CopyOptions(**options))
    src, dst = connect(job.source_uri), connect(job.target_uri)
    progress: dict[str, Any] = {
        "cursor": state["cursor"], "rows": 0, "skipped": 0, "read": 0, "hash": state["hash"],
    }  # fmt: skip

    def commit(cursor: str, rows: int, content_hash: int, skipped: int) -> None:
        progress["cursor"] = cursor
        progress["rows"] += rows
        progress["skipped"] += skipped
        progress["read"] += rows + skipped
        progress["hash"] = content_hash

    try:
        stream = _Run(
            src,
            dst,
            run["run_id"],
            CollectionSpec.from_json(run["spec"]),
            CollectionSpec.from_json(run["target_spec"]),
        )
        ps = PartitionState(
            index=state["index"],
            partition=Partition.from_json(state["partition"]),
            cursor=state["cursor"],
            rows=state["rows"],
            skipped=0,
            content_hash=state["hash"],
            done=False,
        )
        progress["done"] = job.stream_partition(stream, ps, commit, max_batches=SLICE_BATCHES)
    finally:
        src.close()
        dst.close()
    return progress


def copy_on_ray(job: Any, ledger: Ledger, run: Any, pending: list[PartitionState]) -> None:
    """Drive ``pending`` partitions through Ray tasks, committing each slice in the ledger."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependency("ray", "ray") from exc
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if job.options.ray_address:
            kwargs["address"] = job.options.ray_address
        else:
            kwargs["num_cpus"] = job.options.workers
            kwargs["include_dashboard"] = False
        ray.init(**kwargs)
    task = ray.remote(max_retries=0)(_copy_slice)
    options = {
        "batch_size": job.options.batch_size,
        "workers": 1,
        "max_attempts": job.options.max_attempts,
        "retry_wait": job.options.retry_wait,
        "prefetch": job.options.prefetch,
        "on_error": job.options.on_error,
        "dead_letter": str(job.dead_letter_path()),
    }
    shared = {
        "run_id": run.run_id,
        "spec": run.spec.to_json(),
        "target_spec": run.target_spec.to_json(),
    }
    source, target = job.source_uri.redacted(), job.target_uri.redacted()
    queue = list(pending)
    live: dict[Any, dict[str, Any]] = {}

    def submit(state: dict[str, Any]) -> None:
        live[task.remote(source, target, options, shared, state)] = state

    def start_next() -> None:
        if queue:
            s = queue.pop(0)
            submit({
                "index": s.index, "partition": s.partition.to_json(), "cursor": s.cursor,
                "rows": s.rows + s.skipped, "hash": s.content_hash,
            })  # fmt: skip

    for _ in range(min(job.options.workers, len(queue))):
        start_next()
    while live:
        ready, _ = ray.wait(list(live), num_returns=1)
        state = live.pop(ready[0])
        try:
            got = ray.get(ready[0])
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, VecmigrateError) else exc
            for ref in live:
                ray.cancel(ref)
            raise cause from exc
        if got["read"]:
            ledger.commit(
                state["index"], cursor=got["cursor"], rows=got["rows"], skipped=got["skipped"],
                content_hash=got["hash"],
            )  # fmt: skip
            job.progress.advance(got["read"])
        if got["done"]:
            ledger.mark_done(state["index"])
            if not job.stopping:
                start_next()
        elif not job.stopping:
            submit(
                {
                    **state,
                    "cursor": got["cursor"],
                    "rows": state["rows"] + got["rows"],
                    "hash": got["hash"],
                }
            )
