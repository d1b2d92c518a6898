"""Session fixtures that start real engines on 127.0.0.1 (free ports) and stop them after.

Each fixture skips with a clear reason when its engine cannot run here.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
