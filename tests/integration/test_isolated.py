"""A target whose client holds the GIL (Qdrant Edge) is written from a child process: same
result as in-process, errors keep their types, and a killed copy resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.datagen import make_spec, make_table
from tests.integration.test_kill_resume import _copy_cmd, _kill_at
from vecmigrate.connectors import IfExists, connect
from vecmigrate.connectors.isolated import IsolatedConnector
from vecmigrate.connectors.memory.connector import MemoryStore
from vecmigrate.engine.copy import CopyOptions, copy
from vecmigrate.errors import NotFoundError, SchemaMismatch
from vecmigrate.spec import ID
from vecmigrate.uri import ConnectorURI

pytest.importorskip("qdrant_edge")
pytest.importorskip("lancedb")


def _stored(uri: str, ids: list[Any]) -> dict[Any, tuple[np.ndarray, Any]]:
    with connect(uri) as conn:
        got = conn.fetch(ids)
    rows = got.to_pylist()
    return {r[ID]: (np.asarray(r["vector"], np.float32), r.get("category")) for r in rows}


def test_copy_writes_qdrant_edge_from_a_child_and_matches_an_in_process_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(dim=32)
    table = make_table(spec, 3_000)
    MemoryStore.put("iso-src", spec, table)
    made: list[IsolatedConnector] = []
    init = IsolatedConnector.__init__

    def counting(self: IsolatedConnector, uri: ConnectorURI) -> None:
        init(self, uri)
        made.append(self)

    monkeypatch.setattr(IsolatedConnector, "__init__", counting)
    own = copy("memory://iso-src", f"qdrant+edge://{tmp_path}/own", CopyOptions(
        state_dir=tmp_path / "s1", batch_size=500))  # fmt: skip
    assert len(made) == 1  # auto: Qdrant Edge holds the GIL as it writes
    assert made[0]._process.poll() == 0  # the child exited when the copy closed it
    shared = copy("memory://iso-src", f"qdrant+edge://{tmp_path}/shared", CopyOptions(
        state_dir=tmp_path / "s2", batch_size=500, target_process="shared"))  # fmt: skip
    assert len(made) == 1
    assert own.rows == shared.rows == own.target_count == 3_000
    assert own.content_hash == shared.content_hash
    ids = table.column(ID).to_pylist()
    a, b = (
        _stored(f"qdrant+edge://{tmp_path}/own", ids),
        _stored(f"qdrant+edge://{tmp_path}/shared", ids),
    )
    assert a.keys() == b.keys() == set(ids)
    for key, (vector, category) in a.items():
        assert np.array_equal(vector, b[key][0]) and category == b[key][1]


def test_errors_come_back_with_their_types(tmp_path: Path) -> None:
    uri = ConnectorURI.parse(f"qdrant+edge://{tmp_path}/edge")
    conn = IsolatedConnector(uri)
    try:
        assert conn.scheme == "qdrant+edge" and conn.capabilities.holds_gil
        with pytest.raises(NotFoundError):
            conn.describe()
        conn.create(make_spec(dim=8), IfExists.FAIL)
        with pytest.raises(SchemaMismatch):
            conn.create(make_spec(dim=16), IfExists.REUSE)
        assert conn.count() == 0
    finally:
        conn.close()
    with connect(str(uri)) as again:  # closed: the shard can be opened here now
        assert again.describe().vectors[0].dim == 8


def test_own_process_is_refused_for_an_unknown_choice() -> None:
    from vecmigrate.errors import ConfigError

    with pytest.raises(ConfigError, match="--target-process"):
        CopyOptions(target_process="elsewhere")


def test_a_killed_copy_into_qdrant_edge_resumes(tmp_path: Path) -> None:
    """SIGKILL of the copy: its writer process exits when its pipe closes, and the resumed copy
    opens the shard once it is free (it waits a few seconds for that)."""
    spec = make_spec(dim=32)
    table = make_table(spec, 40_000)
    source = f"lancedb://{tmp_path / 'src'}?table=items"
    with connect(source) as src:
        src.create(spec, IfExists.FAIL)
        for batch in table.to_batches(5_000):
            src.upsert(batch)
        src.finalize(spec)
    target = f"qdrant+edge://{tmp_path}/edge"
    state = tmp_path / "state"
    assert _kill_at(_copy_cmd(source, target, state, 2, batch=500), 6_000)
    resumed = subprocess.run(
        _copy_cmd(source, target, state, 1, batch=700), capture_output=True, text=True, check=True
    )
    result = json.loads(resumed.stdout)  # the child's output never mixes into the summary
    assert result["resumed"] and result["target_count"] == 40_000
    ids = table.column(ID).to_pylist()
    got = _stored(target, ids)
    want = pa.Table.from_batches(table.to_batches()).to_pylist()
    for row in want:
        vector = np.asarray(row["vector"], np.float32)
        norm = vector / np.linalg.norm(vector)  # Qdrant stores cosine vectors normalised
        assert np.allclose(got[row[ID]][0], norm, atol=1e-6)


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    """The child is its own module, not a re-import of the caller's script (as with
    multiprocessing's spawn), so a script's top-level code runs once."""
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.datagen import make_spec, make_table\n"
        "from vecmigrate.connectors.memory.connector import MemoryStore\n"
        "from vecmigrate.engine.copy import CopyOptions, copy\n"
        "print('top level ran', flush=True)\n"
        "spec = make_spec(dim=8)\n"
        "MemoryStore.put('s', spec, make_table(spec, 50))\n"
        "root = Path(sys.argv[1])\n"
        "r = copy('memory://s', f'qdrant+edge://{root}/e', CopyOptions(state_dir=root / 'st'))\n"
        "print('rows', r.target_count, flush=True)\n"
    )
    root = Path(__file__).parents[2]
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert run.stdout.splitlines() == ["top level ran", "rows 50"]


def test_connect_writer_isolates_by_choice_or_by_capability(tmp_path: Path) -> None:
    from vecmigrate.connectors.registry import connect_writer
    from vecmigrate.errors import ConfigError

    lance = f"lancedb://{tmp_path}/db?table=t"
    plain = connect_writer(lance)  # auto: LanceDB releases the GIL as it writes
    assert not isinstance(plain, IsolatedConnector)
    plain.close()
    own = connect_writer(lance, "own")
    try:
        assert isinstance(own, IsolatedConnector) and own.scheme == "lancedb"
        own.create(make_spec(dim=8), IfExists.FAIL)
        assert own.count() == 0
    finally:
        own.close()
    edge = connect_writer(f"qdrant+edge://{tmp_path}/edge", "shared")
    assert not isinstance(edge, IsolatedConnector)
    edge.close()
    with pytest.raises(ConfigError, match="auto, own or shared"):
        connect_writer(lance, "nearby")


def test_ctrl_c_stops_a_copy_into_qdrant_edge_cleanly(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group; the target's process ignores it, so the copy
    finishes the batches in hand, reports "interrupted" (exit 130) and resumes later."""
    import signal
    import time

    from tests.integration.test_kill_resume import _ledger_rows

    spec = make_spec(dim=32)
    source = f"parquet://{tmp_path / 'src'}"
    with connect(source) as src:
        src.create(spec)
        for batch in make_table(spec, 40_000).to_batches(5_000):
            src.upsert(batch)
        src.finalize(spec)
    target = f"qdrant+edge://{tmp_path}/edge"
    state = tmp_path / "state"
    cmd = _copy_cmd(source, target, state, 2, batch=300)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while _ledger_rows(state) < 3_000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the copy finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert json.loads(out)["error"] == "Interrupted"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(done.stdout)
    assert summary["resumed"] and summary["target_count"] == 40_000
