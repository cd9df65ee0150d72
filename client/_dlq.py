"""Dead letters: list, show and replay the records of a group's dead-letter topic. One
implementation (``DeadLetterOps``, operations of ``_ops.py``) behind ``Admin`` and
``raftka.aio.Admin`` (``list_dead_letters``, ``dead_letter``, ``replay_dead_letters``),
``raftka dlq list|show|replay GROUP`` and the module functions of the same names.

Whose dead letters: a share group's dead-letter topic is the one in its configuration
(``<group>.dlq`` by default, written by the broker); a consumer group's is ``<group>.dlq``,
written by the classic ``Consumer``'s retry/dead-letter option (``_retry_topics.py``);
``dead_letter_topic=`` names any other. A dead-lettered record keeps its key, value and
headers and carries ``raftka.dlq.*`` headers naming its source topic, partition and
offset, the group, its delivery count, the reason and the last error text.

Replay sends a dead letter back to its source topic (same key, value and original
headers, plus ``raftka.dlq.replayed-from`` = ``<dead-letter topic>/<partition>/<offset>``),
acks=all, and then marks it replayed by appending a *marker* to the dead-letter partition:
a record without value whose header ``raftka.dlq.replayed`` names the offset it marks.
Listing skips markers and, unless asked, the records they mark. Both writes are idempotent
batches (one producer id per replay call, a sequence per partition), so a retried write
is not duplicated; replay is still at-least-once across calls: a crash between the two
writes leaves the record unmarked, and replaying it again sends it again.

Reading goes partition by partition from the log start to the high watermark (Fetch with
decoded records at each partition's leader), so a listing is a snapshot of that moment.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from raftka.client._coordinator import GroupCoordinatorClient
from raftka.client._ops import Ops, Rpc, backoff
from raftka.client._retry import RetryPolicy, Step
from raftka.client._security import ClientSecurity
from raftka.v1 import broker_pb2, share_pb2
from raftka.v1.errors import InconsistentGroupTypeError, NotLeaderError, RaftkaError
from raftka.v1.recordbatch import BatchBuilder

__all__ = ["DeadLetter", "DeadLetterOps", "choose_dead_letters", "list_dead_letters",
           "replay_dead_letters"]

PREFIX = "raftka.dlq."
REPLAYED = PREFIX + "replayed"
REPLAYED_FROM = PREFIX + "replayed-from"
FETCH_BYTES = 1 << 20
_ID_RETRY = RetryPolicy(backoff_initial_s=0.05, backoff_max_s=0.5)


class DeadLetter(NamedTuple):
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int
    source_offset: int
    group: str
    delivery_count: int
    reason: str  # "rejected" or "attempts exhausted"
    error: str  # the member's last error text
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]  # the original headers
    timestamp_ms: int
    replayed: bool


class ShareCoordinatorClient(GroupCoordinatorClient):
    """``Share`` RPCs at a group's coordinator (found with ``FindCoordinator``)."""

    service = "share"


def _text(headers: dict, name: str) -> str:
    value = headers.get(PREFIX + name)
    return value.decode("utf-8", "replace") if value else ""


def _int(headers: dict, name: str) -> int:
    try:
        return int(_text(headers, name))
    except ValueError:
        return -1


def dead_letters_from(topic: str, records: Iterable[tuple[int, Any]],
                      include_replayed: bool) -> list[DeadLetter]:
    """The dead letters among ``(partition, broker_pb2.Record)`` of a dead-letter topic,
    in (partition, offset) order; markers left out, and the records they mark unless
    ``include_replayed``."""
    replayed: set[tuple[int, int]] = set()
    letters = []
    for partition, r in records:
        headers = {h.key: (h.value if h.HasField("value") else None) for h in r.headers}
        mark = headers.get(REPLAYED)
        if mark is not None:
            try:
                replayed.add((partition, int(mark)))
            except ValueError:
                pass
            continue
        letters.append((partition, r, headers))
    out = []
    for partition, r, headers in sorted(letters, key=lambda x: (x[0], x[1].offset)):
        done = (partition, r.offset) in replayed
        if done and not include_replayed:
            continue
        out.append(DeadLetter(
            topic, partition, r.offset, _text(headers, "topic"), _int(headers, "partition"),
            _int(headers, "offset"), _text(headers, "group"), _int(headers, "delivery.count"),
            _text(headers, "reason"), _text(headers, "error"),
            r.key if r.HasField("key") else None, r.value if r.HasField("value") else None,
            tuple((h.key, h.value if h.HasField("value") else None) for h in r.headers
                  if not h.key.startswith(PREFIX)),
            r.timestamp_ms, done))
    return out


def choose_dead_letters(letters: Sequence[DeadLetter],
                        places: Iterable[tuple[int, int]] | None) -> list[DeadLetter]:
    """The letters at ``places`` ((partition, offset) in the dead-letter topic), in that
    order, or every one not replayed (``places`` None). Raises ValueError naming a place
    that holds no dead letter waiting (nothing is chosen then)."""
    waiting = [x for x in letters if not x.replayed]
    if places is None:
        return waiting
    by_place = {(x.dlq_partition, x.dlq_offset): x for x in waiting}
    chosen = []
    for place in places:
        letter = by_place.get(tuple(place))
        if letter is None:
            raise ValueError(f"no dead letter waiting at {place[0]}:{place[1]} (never "
                             "dead-lettered there, or already replayed)")
        chosen.append(letter)
    return chosen


class DeadLetterOps:
    """The dead-letter operations of ``AdminOps`` (which provides ``_cluster``,
    ``_default_timeout``, ``_call_leader_ops``, ``describe_topic_ops``)."""

    _cluster: Any
    _default_timeout: float

    def dead_letter_topic_ops(self, group_id: str, *,
                              timeout: float | None = None) -> Ops[str]:
        """The group's dead-letter topic: a share group's configured one; for a consumer
        group ``<group>.dlq``. Raises UnknownGroupError."""
        timeout = self._default_timeout if timeout is None else timeout
        client = ShareCoordinatorClient(self._cluster, group_id)
        try:
            answer = yield from client.call_ops(
                "DescribeShareGroup", share_pb2.DescribeShareGroupRequest(group_id=group_id),
                timeout, f"describe share group {group_id!r}")
        except InconsistentGroupTypeError:
            return f"{group_id}.dlq"  # a consumer group: the Consumer's default
        return answer.config.dead_letter_topic

    def list_dead_letters_ops(self, group_id: str, *, include_replayed: bool = False,
                              dead_letter_topic: str | None = None,
                              timeout: float | None = None) -> Ops[list[DeadLetter]]:
        """Every dead letter of the group, in (partition, offset) order; replayed ones
        only with ``include_replayed``. Raises UnknownGroupError, UnknownTopicError
        (nothing was dead-lettered yet: the topic is created on first use)."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        topic = dead_letter_topic or (yield from self.dead_letter_topic_ops(
            group_id, timeout=timeout))
        description = yield from self.describe_topic_ops(  # type: ignore[attr-defined]
            topic, timeout=_left(deadline))
        records: list[tuple[int, Any]] = []
        for p in range(description.partition_count):
            bounds = yield from self._call_leader_ops(  # type: ignore[attr-defined]
                topic, p, "ListOffsets", broker_pb2.ListOffsetsRequest(
                    topic=topic, partition=p, timestamp_ms=-2), _left(deadline),
                f"ListOffsets {topic}/{p}")
            offset, end = bounds.offset, bounds.high_watermark
            while offset < end:
                resp = yield from self._call_leader_ops(  # type: ignore[attr-defined]
                    topic, p, "Fetch", broker_pb2.FetchRequest(
                        topic=topic, partition=p, offset=offset, max_bytes=FETCH_BYTES,
                        decode_records=True), _left(deadline), f"Fetch {topic}/{p}")
                records.extend((p, r) for r in resp.records if offset <= r.offset < end)
                if resp.next_offset <= offset:
                    break
                offset = resp.next_offset
        return dead_letters_from(topic, records, include_replayed)

    def dead_letter_ops(self, group_id: str, partition: int, offset: int, *,
                        dead_letter_topic: str | None = None,
                        timeout: float | None = None) -> Ops[DeadLetter]:
        """The dead letter at ``partition:offset`` of the group's dead-letter topic
        (replayed or not). Raises ValueError if there is none there."""
        letters = yield from self.list_dead_letters_ops(
            group_id, include_replayed=True, dead_letter_topic=dead_letter_topic,
            timeout=timeout)
        for x in letters:
            if (x.dlq_partition, x.dlq_offset) == (partition, offset):
                return x
        raise ValueError(f"no dead letter at {partition}:{offset} of group {group_id}'s "
                         f"dead-letter topic; see `raftka dlq list {group_id}`")

    def replay_dead_letters_ops(self, group_id: str,
                                places: Iterable[tuple[int, int]] | None = None, *,
                                dead_letter_topic: str | None = None,
                                timeout: float | None = None
                                ) -> Ops[list[tuple[DeadLetter, int, int]]]:
        """Replay the dead letters at ``places`` ((partition, offset) pairs), or every one
        not replayed yet (``places`` None); checks every place first (ValueError, nothing
        sent). Returns ``(letter, partition, offset)`` of each new copy."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        letters = yield from self.list_dead_letters_ops(
            group_id, dead_letter_topic=dead_letter_topic, timeout=timeout)
        chosen = choose_dead_letters(letters, None if places is None else list(places))
        return (yield from self.replay_letters_ops(chosen, timeout=_left(deadline)))

    def replay_letters_ops(self, letters: Iterable[DeadLetter], *,
                           timeout: float | None = None
                           ) -> Ops[list[tuple[DeadLetter, int, int]]]:
        """Send each dead letter (not yet replayed) back to its source topic and partition,
        then mark it replayed (module docstring). Raises RaftkaError (the letters before
        the failing one are done)."""
        timeout = self._default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        letters = [x for x in letters if not x.replayed]
        if not letters:
            return []
        producer_id = yield from self._init_producer_id_ops(deadline)
        sequences: dict[tuple[str, int], int] = {}
        done = []
        for letter in letters:
            headers = list(letter.headers) + [
                (REPLAYED_FROM, f"{letter.dlq_topic}/{letter.dlq_partition}/"
                                f"{letter.dlq_offset}".encode())]
            offset = yield from self._produce_one_ops(
                letter.source_topic, letter.source_partition, letter.key, letter.value,
                headers, producer_id, sequences, deadline)
            yield from self._produce_one_ops(
                letter.dlq_topic, letter.dlq_partition, letter.key, None,
                [(REPLAYED, str(letter.dlq_offset).encode())], producer_id, sequences,
                deadline)
            done.append((letter, letter.source_partition, offset))
        return done

    def _produce_one_ops(self, topic: str, partition: int, key: bytes | None,
                         value: bytes | None, headers: list, producer_id: tuple[int, int],
                         sequences: dict[tuple[str, int], int], deadline: float) -> Ops[int]:
        sequence = sequences.get((topic, partition), 0)
        builder = BatchBuilder("none", producer_id[0], producer_id[1], sequence)
        builder.append(key, value, headers)
        resp = yield from self._call_leader_ops(  # type: ignore[attr-defined]
            topic, partition, "Produce", broker_pb2.ProduceRequest(
                topic=topic, partition=partition, acks=broker_pb2.ACKS_ALL,
                record_batches=builder.build()), _left(deadline),
            f"Produce {topic}/{partition}")
        sequences[(topic, partition)] = sequence + 1
        return resp.base_offset

    def _init_producer_id_ops(self, deadline: float) -> Ops[tuple[int, int]]:
        """A fresh producer id and epoch (any node answers; the controller leader when
        it must reserve a block: NOT_LEADER names it)."""
        cluster = self._cluster
        retry = _ID_RETRY.start(_left(deadline))
        target = cluster.controller_address()
        attempt = 0
        while retry.next_attempt():
            candidates = cluster.candidate_addresses()
            address = target or candidates[attempt % len(candidates)]
            attempt += 1
            try:
                r = yield Rpc(address, "broker", "InitProducerId",
                              broker_pb2.InitProducerIdRequest(),
                              retry.attempt_timeout(cluster.request_timeout_s),
                              "InitProducerId")
                return r.producer_id, r.producer_epoch
            except RaftkaError as e:
                if retry.classify(e) is Step.RAISE:
                    raise
                target = (e.leader_address or None) if isinstance(e, NotLeaderError) else None
            yield backoff(retry)
        raise retry.timeout_error("InitProducerId") from retry.last


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


# ---------------------------------------------------------------------- module functions
def list_dead_letters(bootstrap: str | Iterable[str], group_id: str, *,
                      include_replayed: bool = False, dead_letter_topic: str | None = None,
                      timeout_s: float = 30.0,
                      security: ClientSecurity | None = None) -> list[DeadLetter]:
    """``Admin.list_dead_letters`` with an Admin of its own."""
    from raftka.client._admin import Admin  # noqa: PLC0415 - _admin imports this module
    with Admin(bootstrap, security=security) as admin:
        return admin.list_dead_letters(group_id, include_replayed=include_replayed,
                                       dead_letter_topic=dead_letter_topic, timeout=timeout_s)


def replay_dead_letters(bootstrap: str | Iterable[str], letters: Iterable[DeadLetter],
                        timeout_s: float = 30.0, security: ClientSecurity | None = None
                        ) -> list[tuple[DeadLetter, int, int]]:
    """Replay these dead letters (``Admin.replay_letters``) with an Admin of its own."""
    from raftka.client._admin import Admin  # noqa: PLC0415 - _admin imports this module
    with Admin(bootstrap, security=security) as admin:
        return admin.replay_letters(letters, timeout=timeout_s)
