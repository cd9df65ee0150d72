"""A bounds check of a Kafka request frame before kio's native reader sees it.

kio's compiled reader sizes an array from its length prefix before reading the elements:
a 20-byte request claiming 2^32 elements makes it ask for ~100 GiB, and a failed
allocation in its Rust code aborts the whole node (found by tests/fuzz, `kafka_request`).
This walks the frame with the schema kio reads it with (kio's own introspection of its
generated classes), checking only that every length prefix fits in the bytes left; it
builds nothing. Nothing per record: record batches are one `records` field, skipped whole.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)

_FIXED = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2,
          "uint32": 4, "uint64": 8, "float64": 8, "uuid": 16, "bool": 1, "error_code": 2,
          "timedelta_i32": 4, "timedelta_i64": 8, "datetime_i64": 8}


class FrameTooShort(ValueError):
    """A length prefix claims more than the frame holds."""


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise FrameTooShort(f"a varint at byte {pos} runs past the frame")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _take(buf: bytes, pos: int, size: int, what: str) -> int:
    if size < 0 or pos + size > len(buf):
        raise FrameTooShort(f"{what} at byte {pos} claims {size} bytes; "
                            f"{len(buf) - pos} remain")
    return pos + size


def _length(buf: bytes, pos: int, flexible: bool, width: int) -> tuple[int, int]:
    """(length or -1 for null, position after the prefix)."""
    if flexible:
        value, pos = _uvarint(buf, pos)
        return value - 1, pos
    end = _take(buf, pos, width, "a length")
    return int.from_bytes(buf[pos:end], "big", signed=True), end


@cache
def _plan(entity_type: type) -> tuple[bool, tuple]:
    flexible = entity_type.__flexible__
    header = entity_type.__name__ == "RequestHeader"
    steps = []
    for field in fields(entity_type):
        if get_field_tag(field) is not None:
            continue  # inside the tagged-fields section, skipped by its sizes
        cls = classify_field(field)
        if isinstance(cls, (PrimitiveField, PrimitiveTupleField)):
            kind = get_schema_field_type(field)
            if header and field.name == "client_id":
                item = ("str", False, 2)  # always a legacy nullable string (kio, Kafka)
            elif kind == "string":
                item = ("str", flexible, 2)
            elif kind in ("bytes", "records"):
                item = ("str", flexible, 4)
            else:
                item = ("fixed", _FIXED[kind])
        else:
            item = ("entity", cls.type_,
                    isinstance(cls, EntityField) and is_optional(field))
        steps.append((cls.is_array, item))
    return flexible, tuple(steps)


def _item(buf: bytes, pos: int, item: tuple) -> int:
    kind = item[0]
    if kind == "fixed":
        return _take(buf, pos, item[1], "a field")
    if kind == "str":
        size, pos = _length(buf, pos, item[1], item[2])
        return pos if size < 0 else _take(buf, pos, size, "a string or bytes field")
    return check_entity(buf, pos, item[1], item[2])


def check_entity(buf: bytes, pos: int, entity_type: type, nullable: bool = False) -> int:
    """The position after the entity at ``pos``; raises FrameTooShort."""
    if nullable:
        pos = _take(buf, pos, 1, "a null marker")
        if buf[pos - 1] == 0xFF:
            return pos
    flexible, steps = _plan(entity_type)
    for is_array, item in steps:
        if not is_array:
            pos = _item(buf, pos, item)
            continue
        count, pos = _length(buf, pos, flexible, 4)
        if count > len(buf) - pos:  # every element takes at least one byte
            raise FrameTooShort(f"an array at byte {pos} claims {count} elements; "
                                f"{len(buf) - pos} bytes remain")
        for _ in range(count):
            pos = _item(buf, pos, item)
    if flexible:
        tags, pos = _uvarint(buf, pos)
        if tags > len(buf) - pos:
            raise FrameTooShort(f"{tags} tagged fields claimed at byte {pos}")
        for _ in range(tags):
            _, pos = _uvarint(buf, pos)
            size, pos = _uvarint(buf, pos)
            pos = _take(buf, pos, size, "a tagged field")
    return pos
