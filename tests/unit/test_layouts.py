"""Framework layouts without engines: metadata typing, the nested-value conventions, nodes."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from vecmigrate.errors import ConfigError, DataError
from vecmigrate.layouts import layout_connector
from vecmigrate.layouts.llamaindex import NO_REF_DOC, read_node, text_node, write_node
from vecmigrate.layouts.metadata import (
    KindTally,
    chroma_value,
    column_name,
    from_chroma_value,
    key_name,
    to_columns,
    to_dicts,
    type_of_kinds,
)
from vecmigrate.spec import MetadataType
from vecmigrate.uri import ConnectorURI

RECORDS = [
    {"a": 1, "b": 1.5, "c": "x", "d": True, "e": ["p", "q"], "f": {"g": [1, {"h": None}]}},
    {"a": 2, "b": 2, "c": "y", "e": ["r"], "f": "text", "id": "own id", "n": [1, 2.5]},
    {"m": [], "k": [1, "one"], "big": 2**70},
]


def test_types_come_from_every_value_of_a_key() -> None:
    tally = KindTally()
    for r in RECORDS:
        tally.add(r)
    types = {f.name: f.type for f in tally.fields()}
    assert types == {
        "a": MetadataType.INT64,
        "b": MetadataType.FLOAT64,  # 1.5 and 2: float64
        "c": MetadataType.STRING,
        "d": MetadataType.BOOL,
        "e": MetadataType.LIST_STRING,
        "f": MetadataType.JSON,  # a dict in one record, a string in another
        "metadata:id": MetadataType.STRING,  # escaped: 'id' is the record id's column
        "n": MetadataType.LIST_FLOAT64,
        "m": MetadataType.JSON,  # an empty list has no item type
        "k": MetadataType.JSON,
        "big": MetadataType.JSON,  # beyond int64
    }
    assert type_of_kinds(set()) is MetadataType.STRING


def test_columns_and_dicts_round_trip_nested_values() -> None:
    tally = KindTally()
    for r in RECORDS:
        tally.add(r)
    fields = tally.fields()
    ids = ["1", "2", "3"]
    columns = to_columns(RECORDS, fields, ids)
    batch = pa.RecordBatch.from_pydict(columns)
    back = to_dicts(batch, fields)
    assert back[0] == {**RECORDS[0], "b": 1.5}
    assert back[1] == {**RECORDS[1], "b": 2.0}  # the integer became a float (float64 key)
    assert back[2] == RECORDS[2]
    assert json.loads(columns["f"][0].as_py()) == {"g": [1, {"h": None}]}


def test_a_key_unknown_at_describe_time_is_an_error_not_a_loss() -> None:
    tally = KindTally()
    tally.add({"a": 1})
    with pytest.raises(DataError, match="'b' is not in the collection spec") as info:
        to_columns([{"a": 1}, {"a": 2, "b": 3}], tally.fields(), ["x", "y"])
    assert info.value.record_id == "y"
    with pytest.raises(DataError, match="is not int64"):
        to_columns([{"a": "one"}], tally.fields(), ["x"])


@pytest.mark.parametrize(
    "value", [{"a": [1, 2]}, [1, "x"], [], "plain", '{"looks": "like json"}', 3, 2.5, True, [1, 2]]
)
def test_chroma_convention_restores_json_keys(value: object) -> None:
    stored = chroma_value(value, json_key=True)
    assert isinstance(stored, str | int | float | bool | list)
    assert from_chroma_value(stored, json_key=True) == value
    assert chroma_value(value, json_key=False) is value


def test_escaped_names_round_trip() -> None:
    for key in ("id", "document", "vector", "_node_content", "metadata:x", "plain"):
        assert key_name(column_name(key)) == key
    assert column_name("plain") == "plain"


def test_nodes_are_written_as_llamaindex_writes_them() -> None:
    written = write_node("n1", {"a": {"b": 1}}, node_content=None, node_type=None, text=None)
    node = json.loads(written.node_content)
    assert node == text_node("n1", {"a": {"b": 1}})
    assert written.node_type == "TextNode" and written.ref_doc_id == NO_REF_DOC
    stored = written.keys({"a": {"b": 1}, "doc_id": "mine"})
    assert stored["doc_id"] == "None"  # LlamaIndex's own key wins at the top level
    plain = list(written.keys({"a": 1}))
    assert plain == ["a", "_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id"]

    node["relationships"] = {"1": {"node_id": "doc-7", "node_type": None, "metadata": {}}}
    raw = json.dumps(node)
    again = write_node("n1", {"a": {"b": 1}}, node_content=raw, node_type="TextNode", text=None)
    assert again.node_content == raw and again.ref_doc_id == "doc-7"  # verbatim when unchanged
    with_text = write_node("n1", {"a": {"b": 1}}, node_content=raw, node_type=None, text="hi")
    read = read_node(with_text.keys({"a": {"b": 1}}))
    assert (read.text, read.metadata, read.node_id) == ("hi", {"a": {"b": 1}}, "n1")
    assert json.loads(read.node_content or "")["text"] == ""


def test_layout_dispatch_refuses_unknown_pairs() -> None:
    with pytest.raises(ConfigError, match="not available for lancedb"):
        layout_connector("langchain", ConnectorURI.parse("lancedb:///tmp/x?table=t"))
