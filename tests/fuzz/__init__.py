"""Coverage-guided fuzzing (atheris, libFuzzer) of what parses hostile bytes: the RecordBatch
v2 codec, Kafka request frames and peer (Raft) batches. ``targets.py`` holds one function per
target that raises only on a bug; ``python -m tests.fuzz TARGET [libFuzzer flags]`` fuzzes
it (``make fuzz`` for long runs); ``test_fuzz.py`` replays every saved regression input and
runs each target briefly in ``make test``."""
