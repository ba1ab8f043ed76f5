"""The write engine, free of Dagster: a run's partitions in, the NeMo tree and its manifests out.

`partition.write_partition` is a partition's steps in order (unchanged? lock, inspect, claims, build
and write, remove stale, record); `batches.write_partitions` runs a run's partitions through it. The
rest are its parts: the partition's input (`partition_input`, `inspection`, `claims`), the writer
(`writer`, `manifest`, `output_version`), what the checks verify (`verification`), and how new inputs
are found (`discovery`). The Dagster assets and the benchmarks both drive it.
"""
