"""Errors the broker returns: a gRPC status code plus a machine-readable ``ErrorInfo``.

The codes, their gRPC statuses, retriable flags and the trailer key are the contract's one
table (``raftka.v1.errors``); this module only raises and sends them. The ``ErrorInfo``
travels in the trailing metadata key ``raftka-error-bin`` (see proto/raftka/v1/errors.proto),
so clients branch on ``code``/``retriable`` and go to the named leader without parsing text.
"""

from __future__ import annotations

import grpc

from raftka.v1 import errors_pb2
from raftka.v1.errors import ERROR_METADATA_KEY, Code, is_retriable, status_for_code

__all__ = ["BrokerError", "Code", "ERROR_METADATA_KEY", "abort_with"]


class BrokerError(Exception):
    def __init__(self, code: int, message: str, retriable: bool | None = None,
                 leader_id: int = 0, leader_address: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retriable = is_retriable(code) if retriable is None else retriable
        self.leader_id = leader_id
        self.leader_address = leader_address

    def info(self) -> errors_pb2.ErrorInfo:
        return errors_pb2.ErrorInfo(
            code=self.code, message=self.message, retriable=self.retriable,
            leader_id=self.leader_id, leader_address=self.leader_address,
        )

    @property
    def status(self) -> grpc.StatusCode:
        return status_for_code(self.code)

    def __repr__(self) -> str:
        return f"BrokerError({errors_pb2.ErrorCode.Name(self.code)}: {self.message})"


async def abort_with(context: grpc.aio.ServicerContext, error: BrokerError) -> None:
    """End the RPC with the error's status, message and ErrorInfo trailer."""
    trailer = ((ERROR_METADATA_KEY, error.info().SerializeToString()),)
    await context.abort(error.status, error.message, trailing_metadata=trailer)
