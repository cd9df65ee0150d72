"""Test helper: find and damage records in a RocksDB write-ahead log (``*.log``).

RocksDB's log format (``db/log_format.h``): the file is a sequence of 32 KiB blocks; each
physical record is ``u32 crc | u16 length | u8 type | payload`` (little-endian; the CRC covers
type and payload); a block tail shorter than a header is zero padding. Types 1-4 are FULL,
FIRST, MIDDLE, LAST; recyclable logs (11-byte headers) are not used by raftka.raft.rocksdb.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

BLOCK_SIZE_BYTES = 32 * 1024
HEADER_SIZE_BYTES = 7
TYPE_FULL = 1


class WalRecord(NamedTuple):
    offset: int  # of the header
    length: int  # payload bytes
    type: int


def wal_records(path: Path) -> list[WalRecord]:
    """Every complete physical record of the log file at ``path``, in file order."""
    data = path.read_bytes()
    out: list[WalRecord] = []
    offset = 0
    while offset + HEADER_SIZE_BYTES <= len(data):
        left_in_block = BLOCK_SIZE_BYTES - offset % BLOCK_SIZE_BYTES
        if left_in_block < HEADER_SIZE_BYTES:
            offset += left_in_block  # zero padding at the end of a block
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        if kind == 0 or offset + HEADER_SIZE_BYTES + length > len(data):
            break  # preallocated zeros or a record cut short at the end
        out.append(WalRecord(offset, length, kind))
        offset += HEADER_SIZE_BYTES + length
    return out


def newest_wal(db_dir: Path) -> Path:
    """The WAL holding the most data (after a crash: the one RocksDB will replay)."""
    logs = [p for p in db_dir.glob("*.log") if p.stat().st_size > 0]
    if not logs:
        raise AssertionError(f"no non-empty WAL in {db_dir}: {sorted(p.name for p in db_dir.iterdir())}")
    return max(logs, key=lambda p: (p.stat().st_size, p.name))


def flip_payload_byte(path: Path, record: WalRecord) -> None:
    """Invert one byte in the middle of ``record``'s payload (its CRC no longer matches)."""
    if record.length == 0:
        raise ValueError("record has no payload")
    data = bytearray(path.read_bytes())
    data[record.offset + HEADER_SIZE_BYTES + record.length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_middle_record(db_dir: Path) -> WalRecord:
    """Damage a FULL record in the middle of the newest WAL, with records after it."""
    wal = newest_wal(db_dir)
    records = [r for r in wal_records(wal) if r.type == TYPE_FULL and r.length > 0]
    if len(records) < 3:
        raise AssertionError(f"{wal} holds only {len(records)} full records")
    record = records[len(records) // 2]
    flip_payload_byte(wal, record)
    return record
