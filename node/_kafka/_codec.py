"""Kafka wire messages: request parsing and response building with ``kio``.

``kio`` generates one frozen dataclass per API, version and entity from the JSON message
schemas in Apache Kafka's source (``clients/src/main/resources/common/message``), with a
compiled reader and a writer that handle flexible versions (KIP-482 compact types and
tagged fields) and the request/response header versions. Nothing here encodes a field by
hand: handlers describe an answer once as nested dicts with Kafka's field names, and
:func:`build` fits it to the version the client asked for (fields the version lacks are
dropped, fields the handler left out get the schema's default, or zero).
"""

from __future__ import annotations

import datetime
import io
import struct
import types
import typing
import uuid
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer

from ._frame_check import FrameTooShort, check_entity

_FIXED_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
_SIZE = struct.Struct(">i")


class MalformedRequest(ValueError):
    """The request does not decode as its API and version's schema."""


def fixed_header(frame: bytes) -> tuple[int, int, int]:
    """(api key, api version, correlation id): the first 8 bytes of every request header
    version, readable before the version is known to be supported."""
    if len(frame) < _FIXED_HEADER.size:
        raise MalformedRequest(f"a request of {len(frame)} bytes is shorter than a header")
    return _FIXED_HEADER.unpack_from(frame)


@cache
def _request_codec(api_key: int, version: int):
    schema = load_request_schema(api_key, version)
    return (entity_reader(schema.__header_schema__), entity_reader(schema),
            load_response_schema(api_key, version))


@cache
def _request_classes(api_key: int, version: int) -> tuple[type, type]:
    schema = load_request_schema(api_key, version)
    return schema.__header_schema__, schema


def parse_request(frame: bytes, api_key: int, version: int) -> tuple[Any, Any, type]:
    """(header, request, response class) of a supported API version. Raises
    MalformedRequest when the bytes do not decode."""
    read_header, read_body, response_cls = _request_codec(api_key, version)
    header_cls, body_cls = _request_classes(api_key, version)
    try:  # lengths first: kio's native reader aborts the process on a huge one
        check_entity(frame, check_entity(frame, 0, header_cls), body_cls)
    except FrameTooShort as exc:
        raise MalformedRequest(str(exc)) from None
    try:
        header, used = read_header(frame, 0)
        body, body_size = read_body(frame, used)
    except Exception as exc:  # noqa: BLE001 - kio raises several kinds for bad input
        raise MalformedRequest(f"{type(exc).__name__}: {exc}") from None
    return header, body, response_cls


@cache
def _response_writers(response_cls: type):
    header_cls = response_cls.__header_schema__
    return header_cls, entity_writer(header_cls), entity_writer(response_cls)


class _Parts(list):
    """A writable for kio's writers that keeps the pieces instead of copying them into
    one buffer: a Fetch answer's record batches (megabytes) are written to the socket as
    they came from the partition, never copied here."""

    write = list.append


def encode_response(response_cls: type, correlation_id: int, values: dict) -> list:
    """The whole response frame (size prefix, header, body) of ``values`` fitted to
    ``response_cls``, as a list of byte strings to write in order."""
    header_cls, write_header, write_body = _response_writers(response_cls)
    parts = _Parts()
    parts.append(b"")
    write_header(parts, header_cls(correlation_id=correlation_id))
    write_body(parts, build(response_cls, values))
    parts[0] = _SIZE.pack(sum(map(len, parts)))
    return parts


def encode_data(cls: type, values: dict, version: int = 0) -> bytes:
    """A versioned data structure of Kafka's (an int16 version, then the entity), e.g. the
    consumer protocol's subscription and assignment inside group messages."""
    parts = _Parts()
    parts.append(_VERSION.pack(version))
    entity_writer(cls)(parts, build(cls, values))
    return b"".join(parts)


_VERSION = struct.Struct(">h")


# ---------------------------------------------------------------------------- building


def build(cls: type, values: dict) -> Any:
    """An instance of kio dataclass ``cls`` from a dict of Kafka field names (see the
    module docstring). Nested entities and arrays of them are dicts and lists of dicts."""
    kwargs = {}
    for f, nested, kafka_type in _fields(cls):
        if f.name in values and (values[f.name] is not None or _optional(f.type)):
            kwargs[f.name] = _convert(values[f.name], nested, kafka_type)
        elif f.name in values:  # None where this version has no null: the zero value
            kwargs[f.name] = _zero(nested, kafka_type, f.type)
        elif f.default is MISSING and f.default_factory is MISSING:
            kwargs[f.name] = _zero(nested, kafka_type, f.type)
    return cls(**kwargs)


@cache
def _fields(cls: type) -> tuple:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        tp = hints.get(f.name, f.type)
        nested = None
        array = False
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):  # X | None
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            origin = typing.get_origin(tp)
        if origin is tuple:
            array = True
            tp = typing.get_args(tp)[0]
        if is_dataclass(tp):
            nested = tp
        kafka_type = f.metadata.get("kafka_type", "")
        out.append((f, (nested, array), kafka_type))
    return tuple(out)


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and \
        type(None) in typing.get_args(tp)


def _convert(value: Any, nested: tuple, kafka_type: str) -> Any:
    cls, array = nested
    if array:
        if value is None:
            return None
        if cls is not None:
            return tuple(v if is_dataclass(v) else build(cls, v) for v in value)
        return tuple(_scalar(v, kafka_type) for v in value)
    if cls is not None:
        return value if value is None or is_dataclass(value) else build(cls, value)
    return _scalar(value, kafka_type)


def _scalar(value: Any, kafka_type: str) -> Any:
    if value is None:
        return None
    if kafka_type == "error_code":
        return ErrorCode(int(value))
    if kafka_type in ("timedelta_i32", "timedelta_i64"):
        return value if isinstance(value, datetime.timedelta) else \
            datetime.timedelta(milliseconds=value)
    if kafka_type == "uuid" and isinstance(value, str):
        return uuid.UUID(value)
    return value


def _zero(nested: tuple, kafka_type: str, tp: Any) -> Any:
    cls, array = nested
    if array:
        return ()
    if cls is not None:
        return build(cls, {})
    optional = _optional(tp)
    if kafka_type == "error_code":
        return ErrorCode.none
    if kafka_type in ("timedelta_i32", "timedelta_i64"):
        return datetime.timedelta(0)
    if kafka_type == "uuid":
        return uuid.UUID(int=0)
    if kafka_type in ("string",):
        return None if optional else ""
    if kafka_type in ("bytes", "records"):
        return None if optional else b""
    if kafka_type == "bool":
        return False
    if kafka_type == "float64":
        return 0.0
    return 0
