"""What a voice-message server reply means to the SDK (pure: no server), per direction."""
from __future__ import annotations

import json

import pytest

from opengme.errors import ErrorCode
from opengme.protocol import ptt as proto
from opengme.sdk.ptt_transfer import (
    DOWNLOAD,
    UPLOAD,
    Codes,
    Reply,
    file_id_problem,
    is_signed_link,
    judge_reply,
    upload_outcome,
)

E = ErrorCode


def refusal(status: int, code: ErrorCode) -> Reply:
    return Reply(status, json.dumps(proto.error_body(code, "why")).encode())


@pytest.mark.parametrize(("codes", "network", "empty", "undecodable"), [
    (UPLOAD, E.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL, E.QAVPTTERROR_UPLOAD_SYSTEM_INNER_ERROR,
     E.QAVPTTERROR_UPLOAD_RSP_DATA_DECODE_FAIL),
    (DOWNLOAD, E.QAVPTTERROR_DOWNLOAD_COS_INTERNAL_FAIL, E.QAVPTTERROR_DOWNLOAD_SYSTEM_INNER_ERROR,
     E.QAVPTTERROR_DOWNLOAD_GET_SIGN_RSP_DATA_DECODE_FAIL),
])
def test_replies_map_to_the_directions_codes(codes: Codes, network: ErrorCode, empty: ErrorCode,
                                             undecodable: ErrorCode) -> None:
    assert judge_reply(codes, Reply(0, b"", error="Connection refused")) == (network, "no answer from the server: "
                                                                                   "Connection refused")
    assert judge_reply(codes, Reply(200, b""))[0] == empty
    assert judge_reply(codes, Reply(502, b""))[0] == empty
    assert judge_reply(codes, Reply(502, b"<html>Bad gateway</html>"))[0] == undecodable
    assert judge_reply(codes, Reply(400, b'{"code": 999999, "message": "?"}'))[0] == undecodable  # not GME's
    assert judge_reply(codes, Reply(400, b'{"code": 0, "message": "?"}'))[0] == undecodable
    assert judge_reply(codes, Reply(400, b"[1, 2]"))[0] == undecodable
    assert judge_reply(codes, refusal(403, E.AV_ERR_SERVICE_NOT_OPENED)) == (E.AV_ERR_SERVICE_NOT_OPENED, "why")
    assert judge_reply(codes, refusal(403, codes.protocol.signature))[0] == codes.protocol.signature
    assert judge_reply(codes, Reply(200, b"OggS..."))[0] == E.AV_OK


def test_an_upload_reply_needs_a_file_id() -> None:
    ok = upload_outcome(UPLOAD, "m.ogg", Reply(201, b'{"code": 0, "file_id": "http://h/v1/ptt/files/x"}'))
    assert (ok.code, ok.file_id, ok.file_path) == (E.AV_OK, "http://h/v1/ptt/files/x", "m.ogg")
    for body in (b'{"code": 0}', b'{"code": 0, "file_id": 5}', b'{"code": 0, "file_id": ""}', b"not json"):
        assert upload_outcome(UPLOAD, "m.ogg", Reply(201, body)).code == E.QAVPTTERROR_UPLOAD_RSP_DATA_DECODE_FAIL


def test_file_ids() -> None:
    url = "http://127.0.0.1:8090/v1/ptt/files/abc"
    assert file_id_problem(url) is None and not is_signed_link(url)
    assert is_signed_link(proto.signed_link(url, "k" * 16, "1400000000", "10001", "abc", 10))
    for bad in ("", "abc", "ftp://h/v1/ptt/files/abc", "http:///v1/ptt/files/abc", "http://h/other/abc"):
        assert file_id_problem(bad) is not None, bad
