"""The test harness: factories of real media, the default dataset's Dagster objects, the S3 endpoint,
the deployment and UI servers, the reliability ledger. One copy of each helper, used by every topic."""
