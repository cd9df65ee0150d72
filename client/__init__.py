"""Raftka's Python client: ``Admin``, ``Producer`` (idempotent, pipelined), ``Consumer``
(consumer groups) and partition readers over the ``raftka.v1`` gRPC API (never the broker's
code). The ``raftka`` command line lives in ``client.cli``. A synchronous API that follows
leader and coordinator changes on its own.

    from raftka.client import Admin, Consumer, Producer, PartitionReader

    with Admin("127.0.0.1:7001") as admin:
        admin.create_topic("events", partitions=3, replication_factor=3)
        admin.wait_for_topic_ready("events", timeout=10)
    with Producer("127.0.0.1:7001") as producer:
        partition, offset = producer.send("events", b"hello", key=b"k").result()
        offsets = producer.send_many("events", [b"a", b"b"], partition=0).result()  # bulk
    with PartitionReader("127.0.0.1:7001", "events", partition, offset="earliest") as r:
        records = r.poll(timeout=1.0)
    with Consumer("127.0.0.1:7001", "billing", ["events"]) as consumer:
        for record in consumer:
            consumer.commit()

Errors are :class:`RaftkaError` subclasses with ``retriable`` / ``invalid_metadata`` flags.
The asyncio twin of this client is ``raftka.aio`` (``client/aio/``): the same parts and
operations (``_ops.py``) with ``grpc.aio`` I/O.
"""

from raftka.client._admin import Admin
from raftka.client._consumer import CommitFailedError, Consumer
from raftka.client._cluster import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP, channel_options, parse_bootstrap
from raftka.client._security import Acl, ClientSecurity, Quota, UserDescription
from raftka.client._transactions import ConsumerGroupMetadata, TransactionDescription
from raftka.v1.errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
    UnknownUserError,
    UserExistsError,
    BrokerNotAvailableError,
    CoordinatorLoadingError,
    CorruptBatchError,
    FencedMemberEpochError,
    GroupNotEmptyError,
    InternalError,
    InvalidConfigError,
    InvalidOffsetError,
    InvalidRequestError,
    LeaderNotAvailableError,
    NoBrokersAvailable,
    NoQuorumError,
    NotCoordinatorError,
    NotEnoughReplicasError,
    NotLeaderError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    PartitionNotAssignedError,
    ProducerClosedError,
    ProducerFencedError,
    InvalidTxnStateError,
    TransactionalIdNotFoundError,
    ConcurrentTransactionsError,
    InvalidTransactionTimeoutError,
    TransactionCoordinatorFencedError,
    InvalidProducerEpochError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    RequestTooLargeError,
    ShuttingDownError,
    TopicExistsError,
    UnknownGroupError,
    UnknownMemberIdError,
    UnknownPartitionError,
    UnknownProducerIdError,
    UnknownTopicError,
    error_class_for_code,
    error_from_rpc,
)
from raftka.client._cluster_ops import (
    BalancerMove,
    BalancerNode,
    BalancerStatus,
    ClusterNode,
    Reassignment,
    ReplicaProgress,
)
from raftka.client._partitioner import default_partition, murmur2
from raftka.client._producer import Producer, RecordMetadata
from raftka.client._reader import PartitionReader, TopicReader
from raftka.client._types import (
    BrokerDescription,
    ClusterDescription,
    ClusterStatus,
    ConsumedBatch,
    ConsumedRecord,
    GroupDescription,
    ConfigEntry,
    GroupListing,
    GroupMemberDescription,
    GroupOffsetReset,
    GroupPartitionLag,
    NodeDescription,
    LatencyHistogram,
    NodeStats,
    NodeStatus,
    PartitionDescription,
    PartitionOffsets,
    PartitionStatus,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "BalancerMove",
    "BalancerNode",
    "BalancerStatus",
    "ClusterNode",
    "Reassignment",
    "ReplicaProgress",
    "Acl",
    "AuthenticationFailedError",
    "AuthorizationFailedError",
    "ClientSecurity",
    "ClusterAuthorizationFailedError",
    "GroupAuthorizationFailedError",
    "Quota",
    "TopicAuthorizationFailedError",
    "TransactionalIdAuthorizationFailedError",
    "UnknownUserError",
    "UserDescription",
    "UserExistsError",
    "Admin",
    "CommitFailedError",
    "Consumer",
    "BOOTSTRAP_ENV",
    "BrokerDescription",
    "BrokerNotAvailableError",
    "ClusterDescription",
    "ClusterStatus",
    "ConfigEntry",
    "ConsumedBatch",
    "ConsumedRecord",
    "CoordinatorLoadingError",
    "CorruptBatchError",
    "DEFAULT_BOOTSTRAP",
    "FencedMemberEpochError",
    "GroupDescription",
    "GroupListing",
    "GroupMemberDescription",
    "GroupNotEmptyError",
    "GroupOffsetReset",
    "GroupPartitionLag",
    "InternalError",
    "InvalidConfigError",
    "InvalidOffsetError",
    "InvalidRequestError",
    "LeaderNotAvailableError",
    "NoBrokersAvailable",
    "NoQuorumError",
    "NodeDescription",
    "LatencyHistogram",
    "NodeStats",
    "NodeStatus",
    "NotCoordinatorError",
    "NotEnoughReplicasError",
    "NotLeaderError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PartitionDescription",
    "PartitionNotAssignedError",
    "PartitionOffsets",
    "PartitionReader",
    "PartitionStatus",
    "Producer",
    "ProducerClosedError",
    "ProducerFencedError",
    "TransactionDescription",
    "ConsumerGroupMetadata",
    "InvalidTxnStateError",
    "TransactionalIdNotFoundError",
    "ConcurrentTransactionsError",
    "InvalidTransactionTimeoutError",
    "TransactionCoordinatorFencedError",
    "InvalidProducerEpochError",
    "RaftkaError",
    "RaftkaTimeoutError",
    "RecordMetadata",
    "RequestTimedOutError",
    "RequestTooLargeError",
    "ShuttingDownError",
    "TopicDescription",
    "TopicExistsError",
    "TopicPartition",
    "TopicReader",
    "UnknownGroupError",
    "UnknownMemberIdError",
    "UnknownPartitionError",
    "UnknownProducerIdError",
    "UnknownTopicError",
    "channel_options",
    "default_partition",
    "error_class_for_code",
    "error_from_rpc",
    "murmur2",
    "parse_bootstrap",
]

# Share groups (KIP-932): per-record acquisition and acknowledgement, dead-letter topics.
from raftka.client._dlq import DeadLetter, list_dead_letters, replay_dead_letters  # noqa: E402
from raftka.client._share import (  # noqa: E402
    ShareConsumer,
    ShareGroupDescription,
    SharePartitionState,
    ShareRecord,
    describe_share_group,
)
from raftka.v1.errors import InconsistentGroupTypeError, InvalidRecordStateError  # noqa: E402
from raftka.client._retry_topics import RetryTopics  # noqa: E402 - Consumer(retry_topics=)

__all__ += ["DeadLetter", "InconsistentGroupTypeError", "InvalidRecordStateError", "RetryTopics",
            "ShareConsumer", "ShareGroupDescription", "SharePartitionState", "ShareRecord",
            "describe_share_group", "list_dead_letters", "replay_dead_letters"]

# Rolling restart (README, Rolling restart and upgrade): Admin.rolling_restart's pieces
from raftka.client._rolling import (  # noqa: E402
    NodeRestart,
    RollingRestartError,
    exec_restart,
)

__all__ += ["NodeRestart", "RollingRestartError", "exec_restart"]
