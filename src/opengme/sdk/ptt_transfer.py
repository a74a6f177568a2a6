"""Voice-message uploads and downloads over HTTP for ``Ptt``, off the caller's thread.

Each transfer runs in a small worker pool (blocking ``urllib``, no proxies: like the signalling
WebSocket, it talks to the server straight) and ends as one :class:`Outcome` in a thread-safe queue
that ``Ptt`` turns into PTT_UPLOAD_COMPLETE / PTT_DOWNLOAD_COMPLETE inside ``poll``. What a reply
means is decided by :func:`judge_reply`, a pure function:

- the server's refusal body (``{"code", "message"}``, docs/protocol.md "Voice messages") gives its
  code (signature, storage, not found, the app's switches 7005/7012 …);
- an empty reply gives the direction's "empty reply" code (8197 / 12294), one that is not what the
  protocol says (not JSON, no ``file_id``, bytes that do not match ``X-GME-Sha256``) its "cannot
  decode" code (8198 / 12295); no answer at all (refused, reset, timed out) its network code
  (8195 / 12291).

A download is written atomically (temporary file, fsync, rename) only after its sha256 matched.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import queue
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from opengme.codec.voicefile import READ_LIMIT, write_atomically
from opengme.errors import ErrorCode
from opengme.protocol import ptt as proto

WORKERS: Final = 2
TIMEOUT_S: Final = 30.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Codes:
    """The GME codes one direction reports for what can go wrong on the client's side."""

    protocol: proto.Direction  # unset, signature, storage: shared with the server
    local_file: ErrorCode  # the local file cannot be read (upload) or written (download)
    network: ErrorCode  # no answer: refused, reset, timed out
    empty: ErrorCode  # an empty reply
    undecodable: ErrorCode  # a reply that is not what the protocol says


UPLOAD: Final = Codes(proto.UPLOAD, ErrorCode.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR,
                      ErrorCode.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL, ErrorCode.QAVPTTERROR_UPLOAD_SYSTEM_INNER_ERROR,
                      ErrorCode.QAVPTTERROR_UPLOAD_RSP_DATA_DECODE_FAIL)
DOWNLOAD: Final = Codes(proto.DOWNLOAD, ErrorCode.QAVPTTERROR_DOWNLOAD_FILE_ACCESSERROR,
                        ErrorCode.QAVPTTERROR_DOWNLOAD_COS_INTERNAL_FAIL,
                        ErrorCode.QAVPTTERROR_DOWNLOAD_SYSTEM_INNER_ERROR,
                        ErrorCode.QAVPTTERROR_DOWNLOAD_GET_SIGN_RSP_DATA_DECODE_FAIL)


@dataclass(frozen=True)
class Outcome:
    """How one transfer ended: the event's payload and why (for the log)."""

    download: bool
    code: ErrorCode
    file_path: str
    file_id: str
    message: str = ""


@dataclass(frozen=True)
class Reply:
    """What the server answered (status 0: no answer; ``error`` says why)."""

    status: int
    body: bytes
    headers: Message | None = None
    error: str = ""


def judge_reply(codes: Codes, reply: Reply) -> tuple[ErrorCode, str]:
    """The GME code a reply means and a message saying what happened (AV_OK: a success to check
    further: the upload's JSON, the download's bytes)."""
    if reply.status == 0:
        return codes.network, f"no answer from the server: {reply.error}"
    if not reply.body:
        return codes.empty, f"the server answered HTTP {reply.status} with an empty body"
    if 200 <= reply.status < 300:
        return ErrorCode.AV_OK, ""
    try:
        body = json.loads(reply.body)
        code = ErrorCode(body["code"])
        message = str(body["message"])
    except (ValueError, TypeError, KeyError):
        return codes.undecodable, f"HTTP {reply.status} with a body that is not an OpenGME refusal"
    if code == ErrorCode.AV_OK:
        return codes.undecodable, f"HTTP {reply.status} with code 0"
    return code, message


def upload_outcome(codes: Codes, path: str, reply: Reply) -> Outcome:
    """PTT_UPLOAD_COMPLETE for the server's reply to an upload."""
    code, message = judge_reply(codes, reply)
    if code != ErrorCode.AV_OK:
        return Outcome(False, code, path, "", message)
    try:
        file_id = json.loads(reply.body)["file_id"]
    except (ValueError, TypeError, KeyError):
        return Outcome(False, codes.undecodable, path, "", "the reply is not JSON with a file_id")
    if not isinstance(file_id, str) or not file_id:
        return Outcome(False, codes.undecodable, path, "", "the reply's file_id is not a URL")
    return Outcome(False, ErrorCode.AV_OK, path, file_id)


def is_signed_link(file_id: str) -> bool:
    """A file id with a link signature (``download_url``): fetched without the AuthBuffer."""
    return proto.QUERY_SIG in parse_qs(urlsplit(file_id).query)


def file_id_problem(file_id: str) -> str | None:
    """Why ``file_id`` is not a voice-message URL, or None."""
    parts = urlsplit(file_id)
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.path.startswith(proto.FILES_PATH + "/"):
        return f"a file id is the URL upload_recorded_file reported (http://HOST{proto.FILES_PATH}/…), got {file_id!r}"
    return None


def send(url: str, headers: dict[str, str], data: bytes | None = None, timeout: float = TIMEOUT_S) -> Reply:
    """One blocking request (POST when ``data`` is given); never raises: no answer is ``Reply(0, …)``."""
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with _OPENER.open(request, timeout=timeout) as resp:
            return Reply(resp.status, resp.read(), resp.headers)
    except urllib.error.HTTPError as exc:
        try:
            return Reply(exc.code, exc.read(), exc.headers)
        except (OSError, http.client.HTTPException) as inner:
            return Reply(0, b"", error=str(inner))
        finally:
            exc.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Reply(0, b"", error=str(reason) or type(exc).__name__)


class Transfers:
    """The worker pool and the queue of finished transfers of one ``Ptt``."""

    def __init__(self, name: str, timeout: float = TIMEOUT_S) -> None:
        self._name = name
        self.timeout = timeout
        self._pool: ThreadPoolExecutor | None = None
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def submit(self, job: Callable[..., object], *args: Any) -> None:
        """Run ``job(*args)`` in the pool; what it returns goes to ``done`` for the owner's ``poll``."""
        if self._pool is None:  # started on the first transfer: a Context without messages costs no thread
            self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=self._name)
        self._pool.submit(self._run, job, *args)

    def _run(self, job: Callable[..., object], *args: Any) -> None:
        self.done.put(job(*args))

    def close(self) -> None:
        """Drop queued transfers and wait for running ones (each ends within ``timeout``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.done = queue.SimpleQueue()

    def upload(self, url: str, headers: dict[str, str], path: str) -> None:
        self.submit(self.upload_now, url, headers, path)

    def download(self, file_id: str, headers: dict[str, str], path: str) -> None:
        self.submit(self._download, file_id, headers, path)

    def _send(self, url: str, headers: dict[str, str], data: bytes | None = None) -> Reply:
        return send(url, headers, data, self.timeout)

    def upload_now(self, url: str, headers: dict[str, str], path: str) -> Outcome:
        """Upload ``path`` on this thread (the transfer threads' job; streaming recognition's too)."""
        try:
            with open(path, "rb") as f:
                data = f.read(READ_LIMIT + 1)
        except OSError as exc:
            return Outcome(False, UPLOAD.local_file, path, "", f"cannot read {path}: {exc.strerror or exc}")
        if not data:
            return Outcome(False, UPLOAD.local_file, path, "", f"{path} is empty")
        reply = self._send(url, {**headers, "Content-Type": proto.CONTENT_TYPE}, data)
        return upload_outcome(UPLOAD, path, reply)

    def _download(self, file_id: str, headers: dict[str, str], path: str) -> Outcome:
        reply = self._send(file_id, headers)
        code, message = judge_reply(DOWNLOAD, reply)
        if code != ErrorCode.AV_OK:
            return Outcome(True, code, path, file_id, message)
        expected = reply.headers.get(proto.HEADER_SHA256, "") if reply.headers is not None else ""
        if hashlib.sha256(reply.body).hexdigest() != expected.lower():
            return Outcome(True, DOWNLOAD.undecodable, path, file_id,
                           f"the bytes received do not match the server's {proto.HEADER_SHA256} ({expected!r})")
        try:
            write_atomically(Path(path), reply.body)
        except OSError as exc:
            return Outcome(True, DOWNLOAD.local_file, path, file_id, f"cannot write {path}: {exc.strerror or exc}")
        return Outcome(True, ErrorCode.AV_OK, path, file_id)
