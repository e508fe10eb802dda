"""Just enough of the protobuf wire format to take an ONNX model's bytes apart in a worker.

Importing the onnx package would cost each worker ~11 MiB, and parsing a model into its objects
~12 MiB more that the allocator keeps; slicing the bytes costs neither.
"""

from collections.abc import Iterator

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def fields(message: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(field number, payload, the field's whole encoding) of each field of a message, in order.
    The payload is a length-delimited field's bytes (a string or a sub-message), else b"".
    Raises ValueError on bytes that are not a protobuf message."""
    position = 0
    while position < len(message):
        start = position
        key, position = _read_varint(message, position)
        number, wire_type = key >> 3, key & 7
        payload = b""
        if wire_type == _VARINT:
            _, position = _read_varint(message, position)
        elif wire_type == _FIXED64:
            position += 8
        elif wire_type == _FIXED32:
            position += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _read_varint(message, position)
            payload = message[position : position + length]
            position += length
        else:  # groups (3, 4) are not in ONNX's schema
            raise ValueError(f"unexpected wire type {wire_type}")
        if number == 0 or position > len(message):
            raise ValueError("truncated or malformed message")
        yield number, payload, message[start:position]


def strings(message: bytes, number: int) -> list[str]:
    """The values of a repeated string field."""
    return [payload.decode() for field, payload, _ in fields(message) if field == number]


def length_delimited(number: int, payload: bytes) -> bytes:
    """The encoding of a string or sub-message field."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise ValueError("varint longer than 64 bits")


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)
