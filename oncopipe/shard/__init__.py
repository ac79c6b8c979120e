"""The shard stage's library: patient-level split, balancing, HDF5 shards."""
