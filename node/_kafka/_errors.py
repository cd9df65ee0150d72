"""Our error codes (``raftka.v1.errors``) as the Kafka error codes clients act on.

A Kafka client reacts to the code, not the message: NOT_LEADER_OR_FOLLOWER and
UNKNOWN_TOPIC_OR_PARTITION make it refresh metadata and retry, NOT_COORDINATOR and
COORDINATOR_LOAD_IN_PROGRESS make it find the coordinator again, UNKNOWN_MEMBER_ID and
ILLEGAL_GENERATION make a consumer rejoin, OUT_OF_ORDER_SEQUENCE_NUMBER and
INVALID_PRODUCER_EPOCH are an idempotent producer's fatal (or epoch-bumping) errors.
The message, when the API version has an error-message field, is ours.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode as K

from .._errors import Code

_MAP = {
    Code.NOT_LEADER: K.not_leader_or_follower,
    Code.UNKNOWN_TOPIC: K.unknown_topic_or_partition,
    Code.UNKNOWN_PARTITION: K.unknown_topic_or_partition,
    Code.CORRUPT_BATCH: K.corrupt_message,
    Code.OFFSET_OUT_OF_RANGE: K.offset_out_of_range,
    Code.TOPIC_EXISTS: K.topic_already_exists,
    Code.REQUEST_TOO_LARGE: K.message_too_large,
    Code.NO_QUORUM: K.request_timed_out,  # retriable; idempotence prevents a duplicate
    Code.LEADER_NOT_AVAILABLE: K.leader_not_available,
    Code.INVALID_REQUEST: K.invalid_request,
    Code.INVALID_CONFIG: K.invalid_config,
    Code.SHUTTING_DOWN: K.not_leader_or_follower,  # leadership is moving away
    Code.NOT_ENOUGH_REPLICAS: K.invalid_replication_factor,
    Code.INTERNAL_ERROR: K.unknown_server_error,
    Code.OUT_OF_ORDER_SEQUENCE: K.out_of_order_sequence_number,
    Code.PRODUCER_FENCED: K.invalid_producer_epoch,
    Code.UNKNOWN_PRODUCER_ID: K.unknown_producer_id,
    Code.NOT_COORDINATOR: K.not_coordinator,
    Code.COORDINATOR_LOADING: K.coordinator_load_in_progress,
    Code.UNKNOWN_MEMBER_ID: K.unknown_member_id,
    Code.FENCED_MEMBER_EPOCH: K.fenced_member_epoch,
    Code.PARTITION_NOT_ASSIGNED: K.unknown_member_id,  # a classic client rejoins
    Code.GROUP_NOT_EMPTY: K.non_empty_group,
    Code.UNKNOWN_GROUP: K.group_id_not_found,
    Code.INVALID_OFFSET: K.invalid_request,
    Code.INVALID_TXN_STATE: K.invalid_txn_state,
    Code.TRANSACTIONAL_ID_NOT_FOUND: K.transactional_id_not_found,
    Code.CONCURRENT_TRANSACTIONS: K.concurrent_transactions,
    Code.INVALID_TRANSACTION_TIMEOUT: K.invalid_transaction_timeout,
    Code.TRANSACTION_COORDINATOR_FENCED: K.transaction_coordinator_fenced,
    Code.INVALID_PRODUCER_EPOCH: K.invalid_producer_epoch,
    Code.TOPIC_AUTHORIZATION_FAILED: K.topic_authorization_failed,
    Code.GROUP_AUTHORIZATION_FAILED: K.group_authorization_failed,
    Code.CLUSTER_AUTHORIZATION_FAILED: K.cluster_authorization_failed,
    Code.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: K.transactional_id_authorization_failed,
    Code.AUTHENTICATION_FAILED: K.sasl_authentication_failed,
    # share groups (_share.py): an acknowledgement of a record the member does not hold;
    # a share group id used by a consumer group or the other way round
    Code.INVALID_RECORD_STATE: K.invalid_record_state,
    Code.INCONSISTENT_GROUP_TYPE: K.inconsistent_group_protocol,
}


def kafka_code(code: int) -> K:
    """The Kafka error code for one of ours (UNKNOWN_SERVER_ERROR for one not listed)."""
    return _MAP.get(code, K.unknown_server_error)
