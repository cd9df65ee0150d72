"""The share consumer's per-answer work without a cluster: records of a ShareFetch answer
(one merge pass over the decoded records and the acquired ranges) and acknowledgements as
ranges. Checked against a plain reference (a dict by offset, as the code did before)."""

from __future__ import annotations

import random

from raftka.client._share import (
    ACCEPT,
    REJECT,
    RELEASE,
    ShareRecord,
    _decode_overlapping,
    _ranges,
    _share_records,
)
from raftka.v1 import recordbatch


def _reference(topic, partition, ranges, decoded, sent_until):
    by_offset = {r.offset: r for r in decoded}
    records, gaps, unsent = [], [], []
    for first, last, count in sorted(ranges):
        for offset in range(first, last + 1):
            r = by_offset.get(offset)
            if r is None:
                (gaps if offset <= sent_until else unsent).append(offset)
                continue
            records.append(ShareRecord(topic, partition, offset, r.key, r.value,
                                       tuple(r.headers) if r.headers else (), r.timestamp,
                                       count))
    return records, gaps, unsent


def test_records_of_an_answer_match_the_reference() -> None:
    # offsets 0-4, 7-9 (5 and 6 compacted away), 10-11; the answer's limit cut at 11
    buf = b"".join(recordbatch.build_batch([(None, f"v{o}".encode()) for o in range(a, b)],
                                           base_offset=a)
                   for a, b in ((0, 5), (7, 10), (10, 12)))
    rng = random.Random(5)
    for _ in range(200):
        cuts = sorted(rng.sample(range(0, 16), rng.choice((2, 4, 6))))
        ranges = [(cuts[i], cuts[i + 1] - 1 if i + 2 < len(cuts) else cuts[i + 1],
                   rng.randint(1, 5)) for i in range(0, len(cuts) - 1, 2)]
        ranges = [r for r in ranges if r[0] <= r[1]]
        if not ranges:
            continue
        decoded, sent_until = _decode_overlapping(buf, ranges[0][0], ranges[-1][1])
        got = _share_records("t", 3, ranges, decoded, sent_until)
        want = _reference("t", 3, ranges, decoded, sent_until)
        assert got == want, ranges
        if rng.random() < 0.3:  # ranges out of order: the same answer
            assert _share_records("t", 3, ranges[::-1], decoded, sent_until) == want


def test_gaps_are_finished_and_offsets_after_the_batches_sent_go_back() -> None:
    buf = b"".join(recordbatch.build_batch([(b"k", b"v")] * n, base_offset=base)
                   for base, n in ((0, 2), (4, 2)))  # 0-1, 4-5 (2-3 compacted away)
    decoded, sent_until = _decode_overlapping(buf, 0, 8)
    assert sent_until == 5
    records, gaps, unsent = _share_records("t", 0, [(0, 8, 2)], decoded, sent_until)
    assert [r.offset for r in records] == [0, 1, 4, 5]
    assert all(r.delivery_count == 2 and r.topic == "t" for r in records)
    assert isinstance(records[0], ShareRecord) and records[0].value == b"v"
    assert gaps == [2, 3] and unsent == [6, 7, 8]


def test_only_batches_overlapping_the_acquired_offsets_are_decoded() -> None:
    buf = b"".join(recordbatch.build_batch([(None, b"v")] * 3, base_offset=base)
                   for base in (0, 3, 6))
    decoded, sent_until = _decode_overlapping(buf, 4, 4)
    assert [r.offset for r in decoded] == [3, 4, 5] and sent_until == 8


def _reference_ranges(items):
    latest = {o: (k, d, e) for o, k, d, e in items}
    out = []
    for o in sorted(latest):
        k, d, e = latest[o]
        if out and out[-1][1] == o - 1 and out[-1][2:] == [k, d, e]:
            out[-1][1] = o
        else:
            out.append([o, o, k, d, e])
    return out


def test_acknowledgements_become_ranges() -> None:
    def as_lists(ranges):
        return [[r.first_offset, r.last_offset, r.type, r.release_delay_ms, r.error]
                for r in ranges]

    items = [(0, ACCEPT, 0, ""), (1, ACCEPT, 0, ""), (2, RELEASE, 0, "x"),
             (3, RELEASE, 0, "x"), (4, RELEASE, 5, "x"), (6, ACCEPT, 0, ""),
             (7, REJECT, 0, "bad")]
    assert as_lists(_ranges(items)) == [[0, 1, ACCEPT, 0, ""], [2, 3, RELEASE, 0, "x"],
                                        [4, 4, RELEASE, 5, "x"], [6, 6, ACCEPT, 0, ""],
                                        [7, 7, REJECT, 0, "bad"]]
    assert _ranges([]) == []
    rng = random.Random(7)
    for _ in range(300):  # out of order, repeated offsets: a later one wins
        items = [(rng.randrange(12), rng.choice((ACCEPT, RELEASE, REJECT)),
                  rng.choice((0, 5)), rng.choice(("", "e"))) for _ in range(rng.randrange(9))]
        if rng.random() < 0.5:
            items = sorted({i[0]: i for i in items}.values())  # the in-order fast path
        assert as_lists(_ranges(items)) == _reference_ranges(items), items
