"""Row hashes of text do not depend on how many bytes are hashed at a time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from vecmigrate import hashing


def _texts(seed: int, n: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.1:
            out.append(None)
        elif r < 0.2:
            out.append("")
        else:
            size = int(rng.integers(1, 300 if r > 0.9 else 20))
            out.append("".join(chr(int(c)) for c in rng.integers(32, 0x2FF, size)))
    return out


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.binary()])
def test_text_hashes_are_the_same_whatever_the_chunk(
    monkeypatch: pytest.MonkeyPatch, kind: pa.DataType
) -> None:
    texts = _texts(3, 400)
    values = [t.encode() if t is not None and kind == pa.binary() else t for t in texts]
    column = pa.array(values, kind)
    pieces = [column, column.slice(7, 300), column.slice(399, 1), column.slice(5, 0)]
    want = [hashing._binary_hash(c) for c in pieces]  # the whole column in one chunk
    for chunk in (1, 2, 7, 64, 1000):
        monkeypatch.setattr(hashing, "HASH_CHUNK", chunk)
        for c, w in zip(pieces, want, strict=True):
            assert np.array_equal(hashing._binary_hash(c), w)


def test_a_value_longer_than_a_chunk_hashes_as_one_value(monkeypatch: pytest.MonkeyPatch) -> None:
    column = pa.array(["a" * 1000 + "b", "", None, "ab" * 700, "c"])
    want = hashing._binary_hash(column)
    monkeypatch.setattr(hashing, "HASH_CHUNK", 97)
    got = hashing._binary_hash(column)
    assert np.array_equal(got, want)
    assert len(set(got.tolist())) == 5
    # position matters: the same bytes in another order hash differently
    assert not np.array_equal(
        hashing._binary_hash(pa.array(["ab" * 700])), hashing._binary_hash(pa.array(["ba" * 700]))
    )


VALUE_SCHEME_2 = 9187049815326310102


def test_known_values_do_not_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ledgers keep partial hashes across runs and versions: a scheme's values never change."""
    texts = pa.array(["doc-000000001", "", None, "é" * 40])
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(8, dtype=np.float32) / 7), 4)
    batch = pa.RecordBatch.from_pydict(
        {"id": ["a", "b"], "vector": vectors, "document": ["x" * 300, None], "rank": [1, 2]}
    )
    for chunk in (hashing.HASH_CHUNK, 5):
        monkeypatch.setattr(hashing, "HASH_CHUNK", chunk)
        assert hashing._binary_hash(texts).tolist() == [
            6280311998893150047,
            0,
            11400714819323198485,
            7004818030289795442,
        ]
        assert hashing.set_hash(batch, scheme=1) == 18388262058619214907
        assert hashing.set_hash(batch, scheme=2) == VALUE_SCHEME_2


def test_any_change_to_a_vector_changes_its_hash() -> None:
    """Scheme 2 sums uint64 words (two floats each) with odd weights: no single change of a
    word cancels; odd dimensions hash their last float too."""
    rng = np.random.default_rng(1)
    for dim in (1, 3, 8, 768):
        m = rng.standard_normal((50, dim)).astype(np.float32)
        base = hashing._vector_hash(m, 2)
        assert len(set(base.tolist())) == 50
        for col in {0, dim - 1, dim // 2}:
            for value in (np.float32(-0.0), np.nextafter(m[7, col], np.float32(np.inf))):
                changed = m.copy()
                changed[7, col] = value
                got = hashing._vector_hash(changed, 2)
                assert got[7] != base[7]
                assert np.array_equal(np.delete(got, 7), np.delete(base, 7))
