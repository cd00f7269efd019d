"""write, for a Milvus cluster: stage chunks as Parquet in the cluster's bucket, then one Milvus import job.

Upserts stream rows through the proxy; an import has the data nodes read files straight from object storage,
which is how a cluster takes millions of rows. An import inserts, so the driver deletes a re-ingested
document's old chunks before it starts (ids are deterministic, so nothing would dedupe them afterwards).
"""

from __future__ import annotations

import io
import os
import time
import uuid
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from minio import Minio
from pymilvus.bulk_writer import bulk_import, get_import_progress

from ingest_jobs.rows import CHUNK, RESULT_COLUMNS
from rag.config import MilvusConfig
from rag.schema import STORED_FIELDS, VECTOR_FIELD

FILE_COLUMN = "file"
POLL_S = 2.0


class ImportFailed(RuntimeError):
    pass


def stage_client(cfg: MilvusConfig) -> tuple[Minio, str, str]:
    """A MinIO/S3 client for ``bulk_stage_uri`` (credentials from the usual AWS_* variables), its bucket and prefix.

    MinIO's client, as pymilvus' own RemoteBulkWriter uses: it puts a small file in one request, where
    pyarrow's S3 streams went through multipart uploads that S3 stand-ins rejected.
    """
    bucket, _, prefix = cfg.bulk_stage_uri.removeprefix("s3://").partition("/")
    endpoint = urlparse(cfg.bulk_s3_endpoint or "https://s3.amazonaws.com")
    client = Minio(
        endpoint.netloc,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        session_token=os.environ.get("AWS_SESSION_TOKEN"),
        secure=endpoint.scheme == "https",
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    return client, bucket, prefix.strip("/")


class ParquetStager:
    """Callable class for ``map_batches``: writes each batch's chunks as one Parquet file under this run's
    prefix and passes on the tally columns plus the file's key (relative to the bucket, as Milvus wants it)."""

    def __init__(self, cfg: MilvusConfig, run_id: str):
        self.client, self.bucket, prefix = stage_client(cfg)
        self.prefix = f"{prefix}/{run_id}".lstrip("/")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        is_chunk = batch["status"] == CHUNK
        key = ""
        if is_chunk.any():
            columns = {name: pa.array(batch[name][is_chunk].tolist()) for name in STORED_FIELDS}
            columns[VECTOR_FIELD] = pa.array(batch[VECTOR_FIELD][is_chunk].tolist(), type=pa.list_(pa.float32()))
            columns["ingest_time"] = pa.array([int(time.time())] * int(is_chunk.sum()), type=pa.int64())
            key = f"{self.prefix}/part-{uuid.uuid4().hex}.parquet"
            buffer = pa.BufferOutputStream()
            pq.write_table(pa.table(columns), buffer)
            data = buffer.getvalue().to_pybytes()
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))
        out = {name: batch[name] for name in RESULT_COLUMNS}
        out[FILE_COLUMN] = np.where(is_chunk, key, "")
        return out


def run_import(cfg: MilvusConfig, keys: list[str]) -> str:
    """Starts one import job over the staged files and waits for it; returns the job id."""
    url = (cfg.bulk_import_url or cfg.uri).rstrip("/")
    response = bulk_import(url=url, collection_name=cfg.collection, files=[[key] for key in keys], api_key=cfg.token)
    job_id = response.json()["data"]["jobId"]
    deadline = time.monotonic() + cfg.bulk_timeout_s
    while True:
        data = get_import_progress(url=url, job_id=job_id, api_key=cfg.token).json()["data"]
        if data.get("state") == "Completed":
            return job_id
        if data.get("state") == "Failed":
            raise ImportFailed(f"Milvus import job {job_id} failed: {data.get('reason', 'no reason given')}")
        if time.monotonic() > deadline:
            raise ImportFailed(f"Milvus import job {job_id} still {data.get('state')} after {cfg.bulk_timeout_s:.0f}s")
        time.sleep(POLL_S)
