"""The Kafka-protocol listener: Kafka clients and tools talk to the same partitions,
groups and controller as the gRPC API (one truth, two doors).

Modules: ``_listener`` (TCP server, framing, per-connection ordering), ``_codec`` (kio:
request parsing, response building), ``_apis`` (one handler per API, ``SUPPORTED`` =
what ApiVersions advertises), ``_classic`` (the classic group protocol), ``_errors``
(our error codes as Kafka's), ``_security`` (TLS, SASL, ACL checks and quotas of every
API), ``_acls`` (the ACL APIs), ``_txn`` (the transaction APIs), ``_share`` (KIP-932
share groups and share sessions).
"""

from ._apis import SUPPORTED, KafkaApis
from ._listener import KafkaListener
from ._security import ssl_context as kafka_ssl_context

__all__ = ["KafkaApis", "KafkaListener", "SUPPORTED", "kafka_ssl_context"]
