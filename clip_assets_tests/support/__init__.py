"""The test harness, one copy of each helper, used by every topic:

- `factories`: real media and processed-video files (PyAV, Pillow);
- `dataset`: the default dataset's Dagster objects, and one partition materialized with them;
- `s3_endpoint`: moto's server in its own process, a fresh bucket behind the proxy;
- `azurite`, `fake_gcs`: Azure's and GCS's emulators in processes of their own (docs/cloud-storage.md);
- `fault_proxy`: the counting, fault-injecting proxy in front of any store's endpoint;
- `stores`: one store under test, whichever it is (S3, Azure, GCS), and each store's operation names;
- `processes`: free ports, bounded waits, server processes in groups of their own;
- `graphql`: a client of dagster-webserver's GraphQL API and the queries the tests send;
- `deployment`: the shipped instance files, a throwaway PostgreSQL database, a running deployment;
- `hostile_corpus`, `hostile_runs`: the malformed and hostile inputs, and what a run of them left;
- `reliability`: the ledger behind docs/reliability.md;
- `soak`: the soak test's seeded plan of faults, what S3 holds, and the figures it records;
- `partition_process`: one partition materialized in a process of its own (`python -m`).
"""
