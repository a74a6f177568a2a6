"""What the cluster's durable backends cost a voice message: put and get latency (p50/p99) and puts
per second from worker threads, for each pair of byte store and database.

- ``disk+sqlite``: the embedded default (files and ``opengme.db`` in a temporary data directory);
- ``disk+postgres``, ``s3+sqlite``, ``s3+postgres``: PostgreSQL is a fresh database made in the
  server ``--database`` names (dropped at the end); S3 is moto's server, started here on loopback.

A message is ``--bytes`` long (5 KB: about 2 s of speech as the SDK records it). moto is a Python
process on the same CPU, so the S3 figures measure OpenGME's side plus a slow S3; a real store on
another machine adds its network round trips instead.

    python bench/bench_storage.py [--messages 200] [--threads 8] [--database postgresql://127.0.0.1:5432/test]
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlsplit

from opengme.storage import Message, MessageStorage, open_storage

APP, USER = "1400000001", "10001"


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@contextmanager
def postgres(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"opengme_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def s3() -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    try:
        yield f"s3://bench/voice?endpoint={endpoint}&region=us-east-1"
    finally:
        server.stop()


def measure(storage: MessageStorage, count: int, threads: int, size: int) -> dict[str, float]:
    bodies = [os.urandom(size) for _ in range(count)]
    stored: list[Message] = []
    put_times = [timed(lambda body=body: stored.append(storage.put(APP, USER, body, 2000))) for body in bodies]
    get_times = [timed(lambda m=m: storage.read(storage.get(m.file_id) or m)) for m in stored]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda body: storage.put(APP, USER, body, 2000), bodies))
    rate = count / (time.perf_counter() - start)
    return {"put p50": percentile(put_times, 0.5) * 1e3, "put p99": percentile(put_times, 0.99) * 1e3,
            "get p50": percentile(get_times, 0.5) * 1e3, "get p99": percentile(get_times, 0.99) * 1e3,
            "puts/s": rate, "mean put": statistics.fmean(put_times) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--bytes", type=int, default=5_000)
    parser.add_argument("--database", default="postgresql://127.0.0.1:5432/test")
    args = parser.parse_args()
    print(f"{args.messages} messages of {args.bytes} B; put/get latency in ms; puts/s from {args.threads} threads")
    print(f"{'backend':<14} {'put p50':>8} {'put p99':>8} {'get p50':>8} {'get p99':>8} {'puts/s':>8}")
    with s3() as storage_url:
        for name in ("disk+sqlite", "disk+postgres", "s3+sqlite", "s3+postgres"):
            files, database = name.split("+")
            with tempfile.TemporaryDirectory() as data_dir, \
                    (postgres(args.database) if database == "postgres" else nullcontext("")) as database_url:
                storage = open_storage(Path(data_dir), 90, storage_url if files == "s3" else "", database_url)
                try:
                    r = measure(storage, args.messages, args.threads, args.bytes)
                finally:
                    storage.close()
            print(f"{name:<14} {r['put p50']:>8.2f} {r['put p99']:>8.2f} {r['get p50']:>8.2f} {r['get p99']:>8.2f} "
                  f"{r['puts/s']:>8.0f}")


if __name__ == "__main__":
    main()
