"""Where a corpus lives: a local folder or an object-store prefix, checked before any work starts. Reading it is
the ingest job's (``ingest_jobs/read.py``); finding it is shared, so every entry path checks it the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from rag.config import CorpusConfig

OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs")


class CorpusNotFound(FileNotFoundError):
    """The corpus path or URI does not exist."""


@dataclass(frozen=True)
class CorpusLocation:
    """A corpus root: ``root`` is the absolute folder, or ``bucket/prefix`` in an object store."""

    uri: str
    root: str
    remote: bool
    s3_endpoint: str | None = None

    @classmethod
    def of(cls, cfg: CorpusConfig) -> CorpusLocation:
        """The configured corpus; raises CorpusNotFound when none is set or a local folder is missing (an object
        store's prefix is checked when it is listed)."""
        if not cfg.path:
            raise CorpusNotFound("no corpus given: pass a folder or URI, or set corpus.path")
        if urlparse(cfg.path).scheme in OBJECT_STORE_SCHEMES:
            return cls(cfg.path, cfg.path.split("://", 1)[1].rstrip("/"), True, cfg.s3_endpoint)
        root = Path(cfg.path).expanduser().resolve()
        if not root.is_dir():
            raise CorpusNotFound(f"corpus folder not found: {cfg.path}")
        return cls(cfg.path, str(root), False)

    def filesystem(self) -> pafs.FileSystem:
        if not self.remote:
            return pafs.LocalFileSystem()
        if self.uri.startswith("s3://"):
            return pafs.S3FileSystem(
                endpoint_override=self.s3_endpoint,
                region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                allow_bucket_creation=False,
            )
        return pafs.GcsFileSystem()
