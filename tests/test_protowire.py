"""The protobuf wire format reader that splits ONNX models, checked against protobuf itself."""

from pathlib import Path

import onnx
import pytest

from app import contributions, protowire


def test_onnx_field_numbers_are_the_schemas() -> None:
    expected = {
        "_MODEL_GRAPH": onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number,
        "_MODEL_METADATA_PROPS": onnx.ModelProto.DESCRIPTOR.fields_by_name["metadata_props"].number,
        "_GRAPH_NODE": onnx.GraphProto.DESCRIPTOR.fields_by_name["node"].number,
        "_GRAPH_OUTPUT": onnx.GraphProto.DESCRIPTOR.fields_by_name["output"].number,
        "_NODE_OUTPUT": onnx.NodeProto.DESCRIPTOR.fields_by_name["output"].number,
        "_VALUE_INFO_NAME": onnx.ValueInfoProto.DESCRIPTOR.fields_by_name["name"].number,
        "_ENTRY_KEY": onnx.StringStringEntryProto.DESCRIPTOR.fields_by_name["key"].number,
        "_ENTRY_VALUE": onnx.StringStringEntryProto.DESCRIPTOR.fields_by_name["value"].number,
    }
    assert {name: getattr(contributions, name) for name in expected} == expected


def test_fields_are_read_as_protobuf_wrote_them(model_path: Path) -> None:
    payload = model_path.with_suffix(".onnx").read_bytes()
    model = onnx.load_model_from_string(payload)
    fields = list(protowire.fields(payload))

    assert b"".join(raw for _, _, raw in fields) == payload
    by_number = {number: value for number, value, _ in fields}
    assert by_number[2] == model.producer_name.encode()
    assert by_number[7] == model.graph.SerializeToString()
    graph = list(protowire.fields(by_number[7]))
    nodes = [value for number, value, _ in graph if number == 1]
    assert [protowire.strings(node, 2) for node in nodes] == [
        list(n.output) for n in model.graph.node
    ]


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16_383, 16_384, 300_000])
def test_length_delimited_fields_are_encoded_as_protobuf_encodes_them(length: int) -> None:
    value = "x" * length
    entry = onnx.StringStringEntryProto(key=value)
    assert protowire.length_delimited(1, value.encode()) == entry.SerializeToString()
    assert protowire.strings(entry.SerializeToString(), 1) == [value]


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0b",  # field 1 as a group: not in ONNX's schema
        b"\xff" * 11,  # a varint of more than 64 bits
        b"\x3a\x05abc",  # a sub-message longer than the bytes left
        b"\x38",  # a varint field without its value
        b"\x00\x01",  # field number 0
    ],
    ids=["group", "long-varint", "truncated-payload", "truncated-varint", "field-zero"],
)
def test_malformed_bytes_are_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"wire type|varint|truncated|malformed"):
        list(protowire.fields(payload))


def test_a_truncated_model_is_a_value_error(model_path: Path) -> None:
    payload = model_path.with_suffix(".onnx").read_bytes()
    with pytest.raises(ValueError, match="truncated"):
        contributions.split(payload[:-1])
