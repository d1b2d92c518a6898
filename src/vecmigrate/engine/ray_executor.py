"""Run a copy's partitions on Ray actors; the driver's ledger stays the source of truth.

Each actor copies a slice of one partition at a time (a few batches from its committed cursor)
and returns the new cursor, rows and content hash; the driver commits that to the ledger and
hands the actor its next slice. A lost worker or a crashed driver therefore loses at most the
slices in flight, which are re-sent from the committed cursor and absorbed by idempotent writes,
and a run can move between the local and the Ray executor at any point.

A transform (re-embedding) is rebuilt once in each actor from its recipe and kept for every
slice the actor copies, so a model loads once per actor, not once per slice. The actors are
started before the driver connects and plans (``RayLaunch``), so their imports overlap the
driver's; they keep their connections across slices (each write is committed when ``upsert``
returns) and reconnect after a failed one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from vecmigrate.engine.ledger import Ledger, PartitionState
from vecmigrate.engine.transforms import PortableTransform, shape_for_run
from vecmigrate.errors import ConfigError, ConnectorError, MissingDependency, VecmigrateError

log = logging.getLogger("vecmigrate.ray")
SLICE_BATCHES = 8


class SliceWorker:
    """A Ray actor copying slices of partitions, holding the run's transform between them."""

    def __init__(
        self,
        source: str,
        target: str,
        options: dict[str, Any],
        recipe: Callable[[], PortableTransform] | None,
    ) -> None:
        """Started before the driver has planned: imports the clients (``connect``) and builds
        the transform; ``begin`` then gives it the run."""
        from vecmigrate.connectors.registry import connect

        self.source, self.target, self.options = source, target, options
        self.run_id = ""
        self.handoff: dict[str, Any] = {}
        self.hash_scheme = 0
        self.spec: Any = None
        self.target_spec: Any = None
        self._connectors: tuple[Any, Any] | None = None  # (source, target), kept across slices
        self.slices = 0
        self._reported: dict[str, float] = {}
        self._failed: Exception | None = None  # raised by the first slice, with its type kept
        self.transform: PortableTransform | None = None
        try:
            self._connectors = (connect(source), connect(target))
            self.transform = recipe() if recipe is not None else None
        except Exception as exc:
            self._failed = exc
            self.close()

    def begin(self, run: dict[str, Any]) -> bool:
        """The run to write for (planned by the driver); answers once the actor is ready."""
        from vecmigrate.spec import CollectionSpec

        self.run_id = run["run_id"]
        self.handoff = run.get("handoff") or {}
        self.hash_scheme = run["hash_scheme"]
        self.spec = CollectionSpec.from_json(run["spec"])
        self.target_spec = CollectionSpec.from_json(run["target_spec"])
        if self._failed is not None:
            return True
        try:
            if self._connectors is not None:
                self._connectors[1].join(self.run_id, self.handoff)
            if self.transform is not None:
                shape_for_run(self.transform, self.spec, self.target_spec)  # loads a model here
        except Exception as exc:
            self._failed = exc
            self.close()
        return True

    def copy_slice(self, state: dict[str, Any]) -> dict[str, Any]:
        """Copy up to SLICE_BATCHES batches of one partition from ``state['cursor']``."""
        from vecmigrate.connectors.base import Partition
        from vecmigrate.connectors.registry import connect
        from vecmigrate.engine.copy import CopyJob, CopyOptions, _Run

        if self._failed is not None:
            raise self._failed
        job = CopyJob(
            self.source, self.target, CopyOptions(**self.options, transform=self.transform)
        )
        progress: dict[str, Any] = {
            "cursor": state["cursor"], "rows": 0, "skipped": 0, "read": 0, "hash": state["hash"],
        }  # fmt: skip

        def commit(cursor: str, rows: int, content_hash: int, skipped: int) -> None:
            progress["cursor"] = cursor
            progress["rows"] += rows
            progress["skipped"] += skipped
            progress["read"] += rows + skipped
            progress["hash"] = content_hash

        if self._connectors is None:  # a slice failed: start again from fresh connections
            src, dst = connect(job.source_uri), connect(job.target_uri)
            dst.join(self.run_id, self.handoff)
            self._connectors = (src, dst)
        src, dst = self._connectors
        try:
            stream = _Run(src, dst, self.run_id, self.spec, self.target_spec, self.hash_scheme)
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
        except BaseException:
            self._disconnect()  # the next slice starts from fresh connections
            raise
        self.slices += 1
        progress["counters"] = self._counters_since_last()
        return progress

    def _counters_since_last(self) -> dict[str, float]:
        """The transform's counts since the last report (the first includes its model load)."""
        if self.transform is None:
            return {}
        now = self.transform.counters()
        delta = {k: v - self._reported.get(k, 0) for k, v in now.items()}
        self._reported = now
        return delta

    def _disconnect(self) -> None:
        if self._connectors is not None:
            for conn in self._connectors:
                conn.close()
            self._connectors = None

    def close(self) -> dict[str, Any]:
        """Release the transform and the connections; what this actor did."""
        self._disconnect()
        counters = self._counters_since_last()
        if self.transform is not None:
            self.transform.close()
            self.transform = None
        return {"pid": os.getpid(), "slices": self.slices, "counters": counters}


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependency("ray", "ray") from exc
    return ray


class RayLaunch:
    """Ray's start-up, begun before the driver connects and plans: the cluster (unless one is
    up already) and one actor per worker, which import the clients meanwhile."""

    def __init__(self, job: Any) -> None:
        ray = _ray()
        transform = job.options.transform
        if transform is not None and not isinstance(transform, PortableTransform):
            raise ConfigError(
                f"--executor ray cannot run {type(transform).__name__} in its workers: "
                "use --executor local"
            )
        started = time.monotonic()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            address = job.options.ray_address or os.environ.get("RAY_ADDRESS") or None
            if address:
                kwargs["address"] = address
            else:  # a cluster of its own, also when `ray start` made one (or left its address)
                kwargs["address"] = "local"
                kwargs["num_cpus"] = job.options.workers
                kwargs["include_dashboard"] = False
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                flag = "--ray-address" if job.options.ray_address else "RAY_ADDRESS"
                raise ConnectorError(_unreachable(address, exc, flag)) from exc
        options = {
            "batch_size": job.options.batch_size,
            "workers": 1,
            "max_attempts": job.options.max_attempts,
            "retry_wait": job.options.retry_wait,
            "prefetch": job.options.prefetch,
            "on_error": job.options.on_error,
            "dead_letter": str(job.dead_letter_path()),
        }
        recipe = transform.recipe() if transform is not None else None
        source, target = job.source_uri.redacted(), job.target_uri.redacted()
        worker = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(SliceWorker)
        self.ray = ray
        self.actors = [
            worker.remote(source, target, options, recipe) for _ in range(job.options.workers)
        ]
        self.init_s = time.monotonic() - started  # the driver waited this long

    def close(self) -> None:
        """End every actor (those a run used are closed first by the run)."""
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already ended by the run
                self.ray.kill(actor, no_restart=True)
        self.actors = []


def _unreachable(address: str | None, exc: BaseException, flag: str = "--ray-address") -> str:
    """Why connecting to the cluster at ``--ray-address`` failed, and what to check."""
    where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
    hint = "check that it is running and that this machine can reach it"
    if address and address != "auto" and os.environ.get("RAY_AUTH_MODE") is None:
        # Ray sends its token to an address named explicitly only when told to, and clusters
        # started by `ray start` require one by default
        hint += (
            "; a cluster with token authentication (the default of `ray start`) also needs "
            "RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token (or pass --ray-address auto on the head node)"
        )
    return f"{flag}: could not connect to {where} ({exc}); {hint}"


def copy_on_ray(
    job: Any, ledger: Ledger, run: Any, pending: list[PartitionState], launch: RayLaunch
) -> float:
    """Drive ``pending`` partitions through the launched actors, committing each slice;
    returns the seconds spent waiting for the actors to be ready."""
    if not pending:
        return 0.0
    started = time.monotonic()
    ray, transform = launch.ray, job.options.transform
    shared = {
        "run_id": run.run_id,
        "spec": run.spec.to_json(),
        "target_spec": run.target_spec.to_json(),
        "handoff": run.target.handoff(),
        "hash_scheme": run.hash_scheme,
    }
    actors = launch.actors[: len(pending)]
    clean = False
    try:
        ray.get([a.begin.remote(shared) for a in actors])  # processes up, clients imported
        waited = time.monotonic() - started
        _drive(ray, job, ledger, actors, pending, transform)
        clean = True
    finally:
        _release(ray, actors, transform, clean=clean)
    return waited


def _drive(
    ray: Any,
    job: Any,
    ledger: Ledger,
    actors: list[Any],
    pending: list[PartitionState],
    transform: PortableTransform | None,
) -> None:
    """Hand slices to idle actors until every partition is done (or the job stops)."""
    queue = [
        {
            "index": s.index, "partition": s.partition.to_json(), "cursor": s.cursor,
            "rows": s.rows + s.skipped, "hash": s.content_hash,
        }
        for s in pending
    ]  # fmt: skip
    live: dict[Any, tuple[dict[str, Any], Any]] = {}

    def submit(state: dict[str, Any], actor: Any) -> None:
        live[actor.copy_slice.remote(state)] = (state, actor)

    for actor in actors:
        if queue:
            submit(queue.pop(0), actor)
    while live:
        ready, _ = ray.wait(list(live), num_returns=1)
        state, actor = live.pop(ready[0])
        try:
            got = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, VecmigrateError) else exc) from exc
        if transform is not None and got["counters"]:
            transform.absorb(got["counters"])
        if got["read"]:
            ledger.commit(
                state["index"], cursor=got["cursor"], rows=got["rows"], skipped=got["skipped"],
                content_hash=got["hash"],
            )  # fmt: skip
            job.progress.advance(got["read"])
        if got["done"]:
            ledger.mark_done(state["index"])
            if queue and not job.stopping:
                submit(queue.pop(0), actor)
        elif not job.stopping:
            submit(
                {
                    **state,
                    "cursor": got["cursor"],
                    "rows": state["rows"] + got["rows"],
                    "hash": got["hash"],
                },
                actor,
            )


def _release(
    ray: Any, actors: list[Any], transform: PortableTransform | None, *, clean: bool
) -> None:
    """Close the actors' transforms (their last counts go to ``transform``), then end them.

    After a failure the actors are ended at once, slices in flight and all: those slices are
    not committed, and a resume re-sends them (a re-embedding finds its texts in the cache).
    """
    try:
        if clean:
            infos = ray.get([a.close.remote() for a in actors], timeout=120)
            for info in infos:
                if transform is not None and info["counters"]:
                    transform.absorb(info["counters"])
            log.info(
                "ray: %d actors copied %d slices (%s)",
                len(infos),
                sum(i["slices"] for i in infos),
                ", ".join(f"pid {i['pid']}: {i['slices']}" for i in infos),
            )
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
