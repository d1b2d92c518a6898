"""Milvus Lite engines of this process: one per database file, stopped when its last user closes.

pymilvus starts a Milvus Lite process per file on the first client and keeps it until the
interpreter exits; releasing it when the last connector on that file closes unlocks the file
for other processes (a resumed run, the CLI) and avoids a long wait at exit.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any


class LiteEngines:
    """Reference counts of the Milvus Lite files opened by connectors of this process."""

    _lock = threading.Lock()
    _users: dict[str, int] = {}

    @classmethod
    def open_client(cls, path: Path, timeout: float) -> Any:
        """A MilvusClient on the Lite engine for ``path`` (starting the engine if needed)."""
        from pymilvus import MilvusClient

        with warnings.catch_warnings():
            # milvus-lite 2.5 imports pkg_resources, which warns on setuptools >= 80
            warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
            import milvus_lite.server_manager  # noqa: F401

        key = str(path.resolve())
        with cls._lock:
            client = MilvusClient(uri=key, timeout=timeout)
            cls._users[key] = cls._users.get(key, 0) + 1
        return client

    @classmethod
    def release(cls, path: Path) -> None:
        """One user fewer; stop the engine when none is left."""
        key = str(path.resolve())
        with cls._lock:
            left = cls._users.get(key, 0) - 1
            if left > 0:
                cls._users[key] = left
                return
            cls._users.pop(key, None)
            from milvus_lite.server_manager import server_manager_instance

            if key in server_manager_instance._servers:
                server_manager_instance.release_server(key)
