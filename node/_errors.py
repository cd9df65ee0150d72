"""Errors the broker returns: a gRPC status code plus the machine-readable error details.

The codes, their gRPC statuses, retriable flags and the trailer formats are the contract's
one table (``raftka.v1.errors``); this module only raises and sends them. A failed call
carries (proto/raftka/v1/errors.proto):

- gRPC's standard rich error model: a ``google.rpc.Status`` with one ``google.rpc.ErrorInfo``
  (reason = the ErrorCode name, domain ``raftka.v1``, metadata ``retriable``, ``leader_id``,
  ``leader_address`` and per-error keys) in ``grpc-status-details-bin``, built with
  grpcio-status, so grpcurl and every gRPC library's status helpers show it;
- the same error as our own ``raftka.v1.ErrorInfo`` in ``raftka-error-bin``, for clients
  written before the standard details (an older Python client reads only it).

Both come from the one ``BrokerError``, so they cannot disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from raftka.v1 import errors_pb2

from raftka.v1.errors import (
    ERROR_METADATA_KEY,
    Code,
    is_retriable,
    rich_status,
    status_for_code,
)

try:  # what context.abort raises when the RPC has ended meanwhile
    from grpc._cython.cygrpc import ExecuteBatchError as _RPC_ENDED
except ImportError:  # pragma: no cover - another gRPC build: only the done() check
    _RPC_ENDED = ()

__all__ = ["BrokerError", "Code", "ERROR_METADATA_KEY", "abort_with", "forget_outcome"]


class BrokerError(Exception):
    """An error to answer a request with. ``metadata`` adds keys to the standard
    ``google.rpc.ErrorInfo.metadata`` (e.g. the offsets of a batch that does not decode)."""

    def __init__(self, code: int, message: str, retriable: bool | None = None,
                 leader_id: int = 0, leader_address: str = "",
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retriable = is_retriable(code) if retriable is None else retriable
        self.leader_id = leader_id
        self.leader_address = leader_address
        self.metadata = dict(metadata or {})

    def info(self) -> errors_pb2.ErrorInfo:
        """Our own ``raftka.v1.ErrorInfo`` (``raftka-error-bin``, ProduceStream answers)."""
        return errors_pb2.ErrorInfo(
            code=self.code, message=self.message, retriable=self.retriable,
            leader_id=self.leader_id, leader_address=self.leader_address,
        )

    def rich_status(self) -> status_pb2.Status:
        """The standard ``google.rpc.Status`` (``grpc-status-details-bin``)."""
        return rich_status(self.code, self.message, self.retriable, self.leader_id,
                           self.leader_address, self.metadata)

    @property
    def status(self) -> grpc.StatusCode:
        return status_for_code(self.code)

    def __repr__(self) -> str:
        return f"BrokerError({errors_pb2.ErrorCode.Name(self.code)}: {self.message})"


async def abort_with(context: grpc.aio.ServicerContext, error: BrokerError) -> None:
    """End the RPC with the error's status, message and both error trailers. An RPC that
    has ended already (its client went away, or its deadline passed while the answer was
    being worked out: a forwarded join that timed out) has nobody to tell: it ends as
    cancelled, quietly, instead of failing inside gRPC (ExecuteBatchError, logged with a
    traceback)."""
    if context.done():
        raise asyncio.CancelledError
    status = rpc_status.to_status(error.rich_status())
    trailer = (*status.trailing_metadata, (ERROR_METADATA_KEY, error.info().SerializeToString()))
    try:
        await context.abort(status.code, status.details, trailing_metadata=trailer)
    except _RPC_ENDED:  # it ended between the check and the abort
        raise asyncio.CancelledError from None


def forget_outcome(future: asyncio.Future) -> None:
    """Nobody will await ``future`` (a request's outcome) any more: its requester went
    away. Its failure when it comes (NOT_LEADER: the write was lost in a leader change) is
    an expected event, read here instead of logged by asyncio as "exception was never
    retrieved" with a traceback."""
    future.add_done_callback(_read_outcome)


def _read_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
