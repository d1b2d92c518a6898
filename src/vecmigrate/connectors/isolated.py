"""A connector run in a child process of its own, called through a pipe.

For engines embedded in Python that hold the GIL while they work (Qdrant Edge's ``update``
does): in the copy's process, a reader thread would wait for every write. In a child, the
engine has a core to itself while this process reads, checks and hashes the next batches.

The child is ``python -m vecmigrate.connectors.isolated FD`` with one end of a socket pair:
unlike multiprocessing's spawn, it never imports the caller's main script again. Calls are
forwarded one at a time, in order (the engine is single-threaded in the child); a thread
waiting for its call's answer releases the GIL. Errors come back as the same vecmigrate error
types (a ``TransientError`` stays retryable). The child exits when it is closed, and on its
own when this process dies (its end of the socket closes), which releases the files it holds.
Connectors registered at run time (``register``) are unknown to the child: built-ins and
entry points only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from vecmigrate.connectors.base import Connector
from vecmigrate.errors import TerminalError, VecmigrateError
from vecmigrate.uri import ConnectorURI

log = logging.getLogger("vecmigrate.isolated")
START_TIMEOUT_S = 120.0  # the child imports the client library before it answers
_FORWARDED = frozenset(
    {
        "exists", "describe", "count", "partitions", "fetch", "query", "create", "set_source",
        "begin", "handoff", "join", "upsert", "delete", "finalize", "drop", "apply_access",
    }
)  # fmt: skip


def _serve(conn: Connection, uri: ConnectorURI) -> None:
    """The child: open the connector, answer calls until closed or the parent is gone."""
    from vecmigrate.connectors.registry import connect

    try:
        connector = connect(uri)
    except BaseException as exc:  # the parent raises it
        conn.send((False, _portable(exc)))
        return
    conn.send((True, (connector.scheme, connector.capabilities)))
    try:
        while True:
            try:
                name, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return  # the parent died or closed the pipe
            if name == "close":
                break
            try:
                answer = (True, getattr(connector, name)(*args, **kwargs))
            except BaseException as exc:
                answer = (False, _portable(exc))
            try:
                conn.send(answer)
            except (OSError, ValueError):
                return  # the parent is gone
            except Exception as exc:  # the answer does not pickle (nothing was sent)
                conn.send((False, _portable(exc)))
    finally:
        connector.close()
        with contextlib.suppress(OSError, ValueError):
            conn.send((True, None))  # closed: the parent may open the files itself now


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling with its type, else a VecmigrateError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return VecmigrateError(f"{type(exc).__name__}: {exc}")


class IsolatedConnector(Connector):
    """Forwards a connector's calls to a child process that holds the real one."""

    def __init__(self, uri: ConnectorURI) -> None:
        super().__init__(uri)
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stdout is the copy's (its --json summary)
                env=env,
            )
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()
        self._closed = False
        started = time.monotonic()
        try:
            self._conn.send(uri)
            if not self._conn.poll(START_TIMEOUT_S):
                raise TimeoutError
            ok, answer = self._conn.recv()
        except (EOFError, OSError, TimeoutError) as exc:
            self._process.kill()
            code = self._process.wait()
            raise TerminalError(
                f"{uri.scheme}: the connector's own process did not start (exit code {code})"
            ) from exc
        if not ok:
            self._stop()
            raise answer
        self.scheme, self.capabilities = answer  # type: ignore[misc]
        log.debug("%s runs in process %s (%.2f s to start)", uri, self._process.pid,
                  time.monotonic() - started)  # fmt: skip

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._closed:
                raise TerminalError(f"{self.scheme}: the connector is closed")
            try:
                self._conn.send((name, args, kwargs))
                ok, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                code = self._process.poll()
                raise TerminalError(
                    f"{self.scheme}: the connector's process ended (exit code {code}) during {name}"
                ) from exc
        if not ok:
            raise value
        return value

    def __getattribute__(self, name: str) -> Any:
        if name in _FORWARDED:
            call = object.__getattribute__(self, "_call")
            return lambda *args, **kwargs: call(name, *args, **kwargs)
        return object.__getattribute__(self, name)

    def close(self) -> None:
        """Close the real connector and wait for its process to exit (its files released)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            self._conn.send(("close", (), {}))
            if self._conn.poll(60):
                self._conn.recv()
        self._conn.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


if __name__ == "__main__":  # the child: python -m vecmigrate.connectors.isolated FD
    # Ctrl-C reaches the whole process group: the parent stops the copy and closes the child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _child = Connection(int(sys.argv[1]))
    _serve(_child, _child.recv())
