"""Voice messages (and recordings, which are stored as voice messages) in S3-compatible object
storage, so every node of a cluster reads what any node wrote: ``storage_url = "s3://BUCKET/PREFIX"``.

The URL's query may name ``endpoint`` (MinIO, Ceph, moto: ``http://127.0.0.1:9000``) and ``region``;
credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE`` and ``~/.aws``, or an instance role), never from the URL, so no secret is printed by
``opengme config``.

One object per message (``PREFIX/messages/<file_id>.ogg``): unlike files on one disk, objects
cannot be shared by messages without a race between one node's delete and another's put, so there
is no content addressing. A ``put`` uploads the object (a single PUT: S3 makes it visible whole or
not at all) and then inserts the row; a crash between the two leaves an object without a row, which
a retention pass removes once it is older than :data:`ORPHAN_GRACE` (younger ones may be uploads
whose row is on its way from another node). Calls block: the server makes them from worker threads,
as it does for the disk backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opengme.datadir import DataDirError
from opengme.db import Database
from opengme.storage import SUFFIX, Message, RowStorage

FOLDER = "messages/"
ORPHAN_GRACE = 3600.0  # seconds: an object without a row younger than this may be an upload in progress
_QUERY_KEYS = ("endpoint", "region")


def parse_url(storage_url: str) -> tuple[str, str, dict[str, str]]:
    """(bucket, key prefix ending in "/" or "", options) of an ``s3://`` URL; ValueError saying what is wanted."""
    parts = urlsplit(storage_url)
    wanted = "storage_url must look like s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]"
    if parts.scheme != "s3" or not parts.netloc or parts.fragment:
        raise ValueError(f"{wanted}, got {storage_url!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(f"{wanted}: unknown option(s) {', '.join(unknown)} (credentials come from the AWS "
                         "environment variables or ~/.aws, not the URL)")
    options = {key: values[-1] for key, values in query.items()}
    endpoint = options.get("endpoint", "")
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"{wanted}: endpoint must be an http(s):// URL, got {endpoint!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else "", options


class S3Storage(RowStorage):
    """Bytes in an S3 bucket, rows in the durable tables (the cluster's PostgreSQL, or SQLite)."""

    locked_puts = False  # the sweep spares young objects, so uploads need not hold the cluster's write lock

    def __init__(self, data_dir: Path | str, storage_url: str, retention: float, database_url: str = "") -> None:
        try:
            self.bucket, self.prefix, options = parse_url(storage_url)
        except ValueError as exc:
            raise DataDirError(str(exc)) from None
        import boto3  # only a node that uses S3 pays for the import
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        self._client: Any = boto3.client(
            "s3", endpoint_url=options.get("endpoint") or None, region_name=options.get("region") or None,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
        )
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except self._errors as exc:
            raise DataDirError(f"cannot use the bucket {self.bucket!r} of storage_url ({exc}); create it, and give "
                               "this node credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws)") from None
        super().__init__(data_dir, retention, database_url)

    def close(self) -> None:
        super().close()
        self._client.close()

    def _key(self, file_id: str) -> str:
        return f"{self.prefix}{FOLDER}{file_id}{SUFFIX}"

    def _save(self, message: Message, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(message.file_id), Body=data,
                                    ContentType="audio/ogg")
        except self._errors as exc:
            raise OSError(f"S3 upload to {self.bucket}: {exc}") from exc

    def _load(self, message: Message) -> bytes | None:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(message.file_id))
            data: bytes = response["Body"].read()
        except self._errors as exc:
            if _missing(exc):
                return None
            raise OSError(f"S3 download from {self.bucket}: {exc}") from exc
        return data

    def _forget(self, db: Database, message: Message) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(message.file_id))
        except self._errors as exc:  # the transaction that deleted the row rolls back: the message stays whole
            raise OSError(f"S3 delete in {self.bucket}: {exc}") from exc

    def _sweep(self, db: Database, now: float, expired: set[str]) -> tuple[int, int]:
        """Delete the objects of the messages this pass expired, and objects with no row that are older
        than :data:`ORPHAN_GRACE` (a crash between upload and row, or a failed delete)."""
        live = {r["file_id"] for r in db.execute("SELECT file_id FROM voice_messages").fetchall()}
        folder = f"{self.prefix}{FOLDER}"
        doomed: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                for item in page.get("Contents", []):
                    key: str = item["Key"]
                    file_id = key[len(folder):].removesuffix(SUFFIX)
                    old = item["LastModified"].timestamp() < now - ORPHAN_GRACE
                    if file_id in expired or (file_id not in live and old):
                        doomed.append(key)
            for start in range(0, len(doomed), 1000):  # DeleteObjects takes 1000 keys a call
                batch = [{"Key": key} for key in doomed[start:start + 1000]]
                self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        except self._errors as exc:
            raise OSError(f"S3 retention pass in {self.bucket}: {exc}") from exc
        return len(doomed), 0


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404", "NotFound")

