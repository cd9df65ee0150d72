"""Partition choice, compatible with Kafka's Java client.

A keyed record goes to ``toPositive(murmur2(key)) % partitions`` exactly as Kafka's default
partitioner computes it (``org.apache.kafka.common.utils.Utils.murmur2`` with seed
0x9747b28c; ``toPositive(h) = h & 0x7fffffff``), so a key lands on the same partition number
whether a Kafka client or ours wrote it. Records without a key are spread per *batch*
(sticky round-robin, see the producer), not per record, which keeps batches large.
"""

from __future__ import annotations

__all__ = ["default_partition", "murmur2", "to_positive"]

_MASK32 = 0xFFFFFFFF
_M = 0x5BD1E995
_SEED = 0x9747B28C


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """32-bit MurmurHash2 of ``data`` as Kafka's Java client computes it: a signed Java
    ``int`` (-2**31 .. 2**31-1)."""
    data = bytes(data)
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    full = length & ~3
    for i in range(0, full, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    rest = length & 3
    # the Java switch falls through: case 3, then 2, then 1 (which multiplies)
    if rest == 3:
        h ^= data[full + 2] << 16
    if rest >= 2:
        h ^= data[full + 1] << 8
    if rest >= 1:
        h ^= data[full]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (not ``abs``, which overflows)."""
    return number & 0x7FFFFFFF


def default_partition(key: bytes | bytearray | memoryview, partition_count: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    if partition_count <= 0:
        raise ValueError(f"partition_count must be positive, got {partition_count}")
    return to_positive(murmur2(key)) % partition_count
