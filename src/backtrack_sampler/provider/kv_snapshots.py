"""Where the saved KV states used to live; they are now in ``backtrack_sampler.core.kv_snapshots``."""

from backtrack_sampler.core.kv_snapshots import MIN_GAIN, KVSnapshots, Snapshot, common_prefix

__all__ = ["MIN_GAIN", "KVSnapshots", "Snapshot", "common_prefix"]
