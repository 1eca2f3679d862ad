"""Where bytes live: local folders and s3:// prefixes behind one small interface.

Owns: URIs and safe relative paths (`uris`), the one S3 client configuration that boto3 and pyarrow share (`s3`),
listing a job's inputs (`inputs`), the node-local cache of inputs and weights (`cache`), staged, atomic
publishing (`publish`), and `Storage`, the object that joins them (`store`).
May import: foley.config only. Nothing here knows about videos, models or jobs.
"""
