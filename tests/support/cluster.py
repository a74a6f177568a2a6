"""The shared services of a cluster, real and on loopback: a PostgreSQL database of our own (made
in the server that ``TEST_DATABASE_URL`` names, dropped afterwards) and moto's S3 server.

PostgreSQL is the one on 127.0.0.1:5432 (trust auth, database ``test``) unless ``TEST_DATABASE_URL``
says otherwise; where none answers, the tests that need it skip and say so.
"""
from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/test")
S3_ENV = {"AWS_ACCESS_KEY_ID": "opengme-test", "AWS_SECRET_ACCESS_KEY": "opengme-test-secret",
          "AWS_DEFAULT_REGION": "us-east-1"}
"""moto accepts any credentials; boto3 (in the tests and in the nodes) finds these in the environment."""


def _admin() -> Any:
    import psycopg

    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_URL} ({' '.join(str(exc).split())[:120]}); start one or set "
                    "TEST_DATABASE_URL")


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with its connections) when the block ends."""
    name = f"opengme_test_{secrets.token_hex(6)}"
    admin = _admin()
    try:
        admin.execute(f"CREATE DATABASE {name}")
        yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class S3Server:
    """moto's S3 server in a thread of this process, and a client of it."""

    endpoint: str
    client: Any

    def bucket(self) -> str:
        """A new bucket's name."""
        name = f"opengme-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "voice") -> str:
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"

    def keys(self, bucket: str) -> list[str]:
        return [item["Key"] for item in self.client.list_objects_v2(Bucket=bucket).get("Contents", [])]


@contextmanager
def s3_server() -> Iterator[S3Server]:
    import boto3
    from moto.server import ThreadedMotoServer

    saved = {key: os.environ.get(key) for key in S3_ENV}
    os.environ.update(S3_ENV)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield S3Server(endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"))
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
