"""Opening a damaged or crashed RocksLogDB: refuse damage loudly, accept ordinary crashes.

The WAL is replayed in ``tolerate_corrupted_tail_records`` mode (see "Opening and recovery"
in raft/rocks_storage.py): a record that fails its checksum refuses the open with a one-line
``StorageCorruptError`` (``point_in_time`` used to drop it and every later record without a
word); a record cut short at the end of the log, which only an unsynced write torn by a crash
leaves, is dropped and the DB opens with every synced record.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raftka.raft import Entry, EntryKind, HardState, StorageCorruption
from raftka.raft import rocksdb as rs
from raftka.raft.rocksdb import RocksLogDB, StorageCorruptError, StorageOpenError
from tests.rocks_wal import damage_middle_record, flip_payload_byte, newest_wal, wal_records

REPO = Path(__file__).resolve().parents[2]
GROUP = 7


def entry(index: int, size_bytes: int = 60) -> Entry:
    return Entry(1, index, EntryKind.NORMAL, (b"e%d-" % index).ljust(size_bytes, b"x"))


def write_synced(db: RocksLogDB, count: int, start: int = 1) -> None:
    """``count`` saves of one entry each; each returned = synced and acknowledgeable."""
    for index in range(start, start + count):
        db.save_many([(GROUP, HardState(1, 1, index - 1), [entry(index)], None)])


def crash_copy(db: RocksLogDB, dest: Path) -> Path:
    """The files of an open DB as a crash right now would leave them (close() would flush
    the memtable into an SST and empty the WAL). Nothing is flushed while the test writes
    far less than the 64 MiB memtable, so the files do not change under the copy."""
    shutil.copytree(db.path, dest)
    return dest


def assert_operator_message(exc: StorageOpenError, path: Path, *words: str) -> None:
    text = str(exc)
    assert "\n" not in text, "one line for the log"
    assert str(path) in text
    for word in words:
        assert word in text, (word, text)


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """A crash image of a DB holding 60 synced single-entry saves of group ``GROUP``."""
    db = RocksLogDB(tmp_path / "live")
    write_synced(db, 60)
    path = crash_copy(db, tmp_path / "crashed")
    db.close()
    return path


# -- a damaged WAL is refused, never silently truncated ---------------------------------


def test_crash_image_without_damage_keeps_every_synced_entry(crashed: Path) -> None:
    with RocksLogDB(crashed) as db:
        g = db.group(GROUP)
        assert g.last_index() == 60
        assert g.entries(1, 61) == [entry(i) for i in range(1, 61)]


def test_damaged_record_in_the_middle_of_the_wal_refuses_to_open(crashed: Path) -> None:
    damage_middle_record(crashed)
    with pytest.raises(StorageCorruptError) as caught:
        RocksLogDB(crashed)
    assert "checksum mismatch" in caught.value.detail
    assert_operator_message(caught.value, crashed, "damaged in its write-ahead log (0",
                            "synced and acknowledged",
                            "move", "aside", "one node at a time")


def test_damaged_last_synced_record_refuses_to_open(crashed: Path) -> None:
    """The last record is complete (it was synced): damage to it is not a torn tail."""
    wal = newest_wal(crashed)
    flip_payload_byte(wal, wal_records(wal)[-1])
    with pytest.raises(StorageCorruptError):
        RocksLogDB(crashed)


# -- an ordinary crash is not refused ------------------------------------------------------


@pytest.mark.parametrize("cut", ["one byte", "inside the header", "half", "all but one byte"])
def test_unsynced_tail_torn_by_a_crash_opens_with_every_synced_entry(tmp_path: Path, cut: str) -> None:
    """A power cut keeps an arbitrary prefix of the bytes written since the last sync."""
    db = RocksLogDB(tmp_path / "live")
    write_synced(db, 20)
    wal = newest_wal(Path(db.path))
    synced_size = wal.stat().st_size
    # never synced, so never acknowledged; 200 KiB spans several 32 KiB WAL blocks
    db.save_many([(GROUP, HardState(1, 1, 20), [entry(21, 200 << 10)], None)], sync=False)
    image = crash_copy(db, tmp_path / "crashed")
    db.close()
    torn = image / wal.name
    size = torn.stat().st_size
    assert size > synced_size + (200 << 10)
    keep = {"one byte": 1, "inside the header": 5, "half": (size - synced_size) // 2,
            "all but one byte": size - synced_size - 1}[cut]
    os.truncate(torn, synced_size + keep)
    with RocksLogDB(image) as reopened:
        g = reopened.group(GROUP)
        assert g.last_index() == 20
        assert g.entries(1, 21) == [entry(i) for i in range(1, 21)]


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, threading
    from raftka.raft import Entry, HardState
    from raftka.raft.rocksdb import RocksLogDB
    db = RocksLogDB(sys.argv[1])
    threading.Timer(float(sys.argv[2]), lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    for k in range(1, 10**6):  # 3 MiB batches: several write() calls, so a kill can tear one
        db.save_many([(g, HardState(k, 1, k - 1), [Entry(k, k, 0, os.urandom(1 << 20))], None)
                      for g in range(3)])
        print(k, flush=True)
    """
)


def test_sigkill_during_big_writes_never_refuses_the_restart(tmp_path: Path) -> None:
    """kill -9 mid-write, then reopen: ``absolute_consistency`` refused 2 restarts of 15 in
    this setup ("truncated record body"); the store must open every time, with every
    acknowledged save."""
    rng = random.Random(1)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for round_number in range(2):
        path = tmp_path / f"db-{round_number}"
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_WRITER, str(path), f"{rng.uniform(0.5, 1.0):.3f}"],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        acked = int(proc.stdout.split()[-1]) if proc.stdout.split() else 0
        with RocksLogDB(path) as db:
            for g in range(3):
                assert acked <= db.group(g).last_index() <= acked + 1


# -- damaged SST files ----------------------------------------------------------------------


@pytest.fixture
def flushed(tmp_path: Path) -> Path:
    """A cleanly closed DB: its 200 entries are in one SST file, the WAL is empty."""
    path = tmp_path / "db"
    with RocksLogDB(path) as db:
        write_synced(db, 200)
    return path


def only_sst(path: Path) -> Path:
    (sst,) = path.glob("*.sst")
    return sst


def test_damaged_sst_footer_refuses_to_open(flushed: Path) -> None:
    sst = only_sst(flushed)
    data = bytearray(sst.read_bytes())
    data[-10] ^= 0xFF
    sst.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError) as caught:
        RocksLogDB(flushed)
    assert_operator_message(caught.value, flushed, "damaged", "move", "aside")


def test_truncated_sst_refuses_to_open(flushed: Path) -> None:
    sst = only_sst(flushed)
    os.truncate(sst, sst.stat().st_size - 100)
    with pytest.raises(StorageCorruptError) as caught:
        RocksLogDB(flushed)
    assert "size mismatch" in caught.value.detail


def test_damage_anywhere_in_an_sst_is_an_error_never_wrong_or_missing_data(flushed: Path) -> None:
    """Blocks are checked when read: data-block damage opens fine and then raises
    StorageCorruption from ``group()`` (first/last entry, hard state) or from the read, never
    a bare RocksDB exception, a silently shorter log or wrong entries."""
    sst = only_sst(flushed)
    original = sst.read_bytes()
    outcomes: set[str] = set()
    for offset in range(100, len(original), 1500):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        sst.write_bytes(bytes(damaged))
        try:
            db = RocksLogDB(flushed)
        except StorageCorruptError:
            outcomes.add("refused at open")
            continue
        try:
            g = db.group(GROUP)
            assert (g.first_index(), g.last_index()) == (1, 200), offset
            assert g.entries(1, 201) == [entry(i) for i in range(1, 201)], offset
            outcomes.add("undamaged data")  # e.g. a byte of the filter block
        except StorageCorruption:
            outcomes.add("StorageCorruption")
        finally:
            db.close()
    assert {"refused at open", "StorageCorruption"} <= outcomes


# -- other reasons an open fails ----------------------------------------------------------


def test_a_db_in_use_is_refused_as_locked(tmp_path: Path) -> None:
    with RocksLogDB(tmp_path / "db"):
        with pytest.raises(StorageOpenError) as caught:
            RocksLogDB(tmp_path / "db")
    assert not isinstance(caught.value, StorageCorruptError)
    assert_operator_message(caught.value, tmp_path / "db", "locked by another process", "--data-dir")


def test_permission_denied_names_the_fix() -> None:
    # The translation of RocksDB's message, directly (the next test gets a real one).
    error = rs._open_error("/data/raft", Exception(  # noqa: SLF001
        "IO error: While open a file for appending: /data/raft/000004.log: Permission denied"))
    assert type(error) is StorageOpenError
    assert_operator_message(error, Path("/data/raft"), "permission denied", "owner")


_OPEN_AND_REPORT = textwrap.dedent("""
    import sys
    from raftka.raft.rocksdb import RocksLogDB, StorageOpenError
    try:
        RocksLogDB(sys.argv[1])
    except StorageOpenError as exc:
        print(type(exc).__name__, exc)
    else:
        print("opened")
""")


def _without_root_powers() -> list[str]:
    """The command prefix that runs a process without root's power to ignore file modes:
    when the tests run as root (CI does), ``setpriv`` drops every capability from the
    bounding set, so the process keeps uid 0 (it can still run this venv's interpreter,
    wherever the checkout lives) but no longer has CAP_DAC_OVERRIDE; as another user,
    nothing."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run this test without root's powers"
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]


def test_unreadable_directory_is_refused_with_permission_denied(tmp_path: Path) -> None:
    """The data directory's parent is not writable by the node's user: the open fails with
    the one-line permission message. Root ignores file modes, so as root the open runs
    without root's capabilities (``_without_root_powers``)."""
    prefix = _without_root_powers()
    data = tmp_path / "db"
    try:
        data.mkdir(mode=0o500)  # readable, not writable: `raft` cannot be created in it
        opened = subprocess.run([*prefix, sys.executable, "-c", _OPEN_AND_REPORT,
                                 str(data / "raft")], capture_output=True, text=True,
                                cwd=tmp_path, timeout=60)
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout.startswith("StorageOpenError "), opened.stdout + opened.stderr
        assert "permission denied" in opened.stdout and str(data / "raft") in opened.stdout
        assert not (data / "raft").exists()
    finally:
        data.chmod(0o700)
