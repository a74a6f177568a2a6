"""GME's server API through Tencent Cloud's own Python SDK (tencentcloud-sdk-python-gme), pointed at a
real OpenGME server over HTTP: every action, and the refusals as TencentCloudSDKException codes."""
from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.gme.v20180711 import gme_client, models

from opengme.apikeys import ApiKey, ApiKeyStore
from opengme.cli import main
from opengme.core.ratelimit import BucketTable
from opengme.errors import ErrorCode
from opengme.protocol import tc3
from opengme.server import tc3 as tc3_server
from opengme.server.actions import ACTIONS
from opengme.server.tc3 import TC3
from opengme.server.usage import Usage, day_of
from opengme.server.usage import get as usage_of
from support.paths import REPO
from support.signal_harness import Running

T = TypeVar("T")


def client(srv: Running, key: ApiKey, secret_key: str | None = None) -> gme_client.GmeClient:
    """The SDK's client as a backend makes it; only the endpoint (and plain HTTP) differ from GME's."""
    http = HttpProfile(protocol="http", endpoint=srv.url.removeprefix("http://"), reqTimeout=10)
    cred = credential.Credential(key.secret_id, secret_key or key.secret_key)
    return gme_client.GmeClient(cred, "ap-guangzhou", ClientProfile(httpProfile=http))


def new_key(srv: Running, apps: tuple[str, ...] = ()) -> ApiKey:
    keys = ApiKeyStore(srv.server.settings.data_dir)
    try:
        return keys.create("test", apps)
    finally:
        keys.close()


async def call(gme: gme_client.GmeClient, action: str, request: Any) -> Any:
    """One SDK call on a thread (the SDK blocks; the server runs in this loop)."""
    method: Callable[[Any], Any] = getattr(gme, action)
    return await asyncio.to_thread(method, request)


def req(cls: type[T], **params: Any) -> T:
    request = cls()
    request.from_json_string(json.dumps(params))  # type: ignore[attr-defined]
    return request


async def refused(gme: gme_client.GmeClient, action: str, request: Any) -> str:
    with pytest.raises(TencentCloudSDKException) as caught:
        await call(gme, action, request)
    assert caught.value.get_request_id(), "every error carries a RequestId"
    return str(caught.value.get_code())


@pytest.mark.public_surface
async def test_room_actions_through_the_sdk(srv: Running) -> None:
    gme = client(srv, new_key(srv))
    biz = int(srv.app.app_id)
    a = await srv.member("10001", room_id="1234")
    await srv.member("10002", room_id="1234")
    await a.recv()

    info = await call(gme, "DescribeRoomInfo", req(models.DescribeRoomInfoRequest, SdkAppId=biz, RoomIds=[1234, 999]))
    assert info.Result == 0
    assert [(u.RoomId, sorted(u.Uins)) for u in info.RoomUsers] == [(1234, [10001, 10002]), (999, [])]

    mic = req(models.ModifyUserMicStatusRequest, BizId=biz, RoomId="1234", Users=[{"Uid": 10001, "EnableMic": 1}])
    reply = await call(gme, "ModifyUserMicStatus", mic)
    assert reply.Result == 0 and reply.ErrMsg == ""
    assert (await a.recv())["type"] == "mute"
    assert srv.server.web_app  # the mute is the server's: the room says so
    missing = req(models.ModifyUserMicStatusRequest, BizId=biz, RoomId="1234", Users=[{"StrUid": "777", "EnableMic": 2}])
    assert (await call(gme, "ModifyUserMicStatus", missing)).Result == ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST

    kick = req(models.DeleteRoomMemberRequest, BizId=biz, RoomId="1234", DeleteType=2, Uids=["10002"])
    assert (await call(gme, "DeleteRoomMember", kick)).DeleteResult.Code == 0
    times = await call(gme, "DescribeUserInAndOutTime",
                       req(models.DescribeUserInAndOutTimeRequest, BizId=biz, RoomId=1234, UserId=10002))
    assert len(times.InOutList) == 1 and times.InOutList[0].EndTime >= times.InOutList[0].StartTime
    assert times.Duration >= 0
    today = day_of(time.time())  # the stay that ended counts as voice-chat time (DescribeAppStatistics)
    assert (await usage_of(srv.server).days(srv.app.app_id, today, today))[today][Usage.VOICE_SECONDS] > 0

    dissolve = req(models.DeleteRoomMemberRequest, BizId=biz, RoomId="1234", DeleteType=1)
    assert (await call(gme, "DeleteRoomMember", dissolve)).DeleteResult.Code == 0
    # the same request again within a second is the same signed bytes: answered again, not carried out twice
    assert (await call(gme, "DeleteRoomMember", dissolve)).DeleteResult.Code == 0
    again = req(models.DeleteRoomMemberRequest, BizId=biz, RoomId="1234", DeleteType=1, Uids=["1"])
    assert (await call(gme, "DeleteRoomMember", again)).DeleteResult.Code == ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST


@pytest.mark.public_surface
async def test_app_actions_and_statistics_through_the_sdk(srv: Running) -> None:
    gme = client(srv, new_key(srv))
    created = await call(gme, "CreateApp", req(models.CreateAppRequest, AppName="moved from GME",
                                                  VoiceMessageConf={"Status": "close"}))
    app = srv.server.store.require(str(created.Data.BizId))
    assert created.Data.SecretKey == app.key and not app.ptt and app.voice
    assert created.Data.VoiceMessageConf.Status == "close"

    listed = await call(gme, "DescribeApplicationList", req(models.DescribeApplicationListRequest, SearchText="moved"))
    assert listed.Total == 1 and listed.ApplicationList[0].BizId == created.Data.BizId
    assert listed.ApplicationList[0].AppStatus == 0 and listed.ApplicationList[0].ServiceConf.VoiceMessage.Status == 1

    closed = await call(gme, "ModifyAppStatus", req(models.ModifyAppStatusRequest, BizId=created.Data.BizId,
                                                      Status="close"))
    assert closed.Data.Status == "close"
    app = srv.server.store.require(str(created.Data.BizId))
    assert not (app.voice or app.ptt or app.stt)
    listed = await call(gme, "DescribeApplicationList", req(models.DescribeApplicationListRequest))
    status = {a.BizId: a.AppStatus for a in listed.ApplicationList}
    assert status[created.Data.BizId] == 1 and status[int(srv.app.app_id)] == 0

    # usage: a two-minute stay that ended now, plus counters other parts add
    usage = usage_of(srv.server)
    usage.count(srv.app.app_id, Usage.VOICE_SECONDS, 120.0)
    usage.count(srv.app.app_id, Usage.PTT_UPLOADS)
    usage.count(srv.app.app_id, Usage.STT_SECONDS, 7.5)
    today = day_of(time.time())
    stats = await call(gme, "DescribeAppStatistics", req(models.DescribeAppStatisticsRequest, BizId=int(srv.app.app_id),
                                                           StartDate=today, EndDate=today))
    (item,) = stats.Data.AppStatistics
    assert item.Date == today and item.RealtimeSpeechStatisticsItem.MainLandDuration == 2
    assert item.VoiceMessageStatisticsItem.Dau == 1 and item.AudioTextStatisticsItem.Data == 7.5


@pytest.mark.public_surface
async def test_refusals_come_back_as_sdk_exceptions(srv: Running) -> None:
    key = new_key(srv)
    biz = int(srv.app.app_id)
    request = req(models.DescribeRoomInfoRequest, SdkAppId=biz, StrRoomIds=["r1"])
    assert await refused(client(srv, key, "x" * 32), "DescribeRoomInfo", request) == "AuthFailure.SignatureFailure"
    unknown = ApiKey("AKIDnobodyhasthisid0000000000000000", "k" * 32, "", (), True, 0.0)
    assert await refused(client(srv, unknown), "DescribeRoomInfo", request) == "AuthFailure.SecretIdNotFound"
    gme = client(srv, key)
    assert await refused(gme, "DescribeRoomInfo", req(models.DescribeRoomInfoRequest, SdkAppId=biz)) \
        == "InvalidParameterValue"
    assert await refused(gme, "DescribeRoomInfo", req(models.DescribeRoomInfoRequest, StrRoomIds=["r"])) \
        == "MissingParameter"
    # an action GME has that OpenGME does not serve
    assert await refused(gme, "DescribeScanResultList", req(models.DescribeScanResultListRequest, BizId=biz,
                                                              TaskIdList=["t"])) == "InvalidAction"
    limited = client(srv, new_key(srv, ("1400999999",)))
    assert await refused(limited, "DescribeRoomInfo", request) == "AuthFailure.UnauthorizedOperation"
    assert await refused(limited, "CreateApp", req(models.CreateAppRequest, AppName="x")) \
        == "AuthFailure.UnauthorizedOperation"
    await asyncio.to_thread(main, ["--data-dir", str(srv.server.settings.data_dir), "apikey", "disable", key.secret_id])
    assert await refused(gme, "DescribeRoomInfo", request) == "AuthFailure.SecretIdNotFound"


def raw(srv: Running, key: ApiKey, body: bytes, *, action: str = "DescribeRoomInfo", timestamp: int | None = None,
        signed_body: bytes | None = None) -> dict[str, Any]:
    """A hand-made API 3.0 request (for what the SDK will not send: stale or tampered ones)."""
    host = srv.url.removeprefix("http://")
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {"Content-Type": "application/json", "Host": host, "X-TC-Action": action, "X-TC-Version": "2018-07-11",
               "X-TC-Timestamp": str(ts), "X-TC-Region": "ap-guangzhou",
               "Authorization": tc3.authorization(key.secret_id, key.secret_key, ts, host,
                                                  body if signed_body is None else signed_body)}
    request = urllib.request.Request(srv.url + "/", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        reply: dict[str, Any] = json.loads(response.read())["Response"]
    assert reply["RequestId"]
    return reply


@pytest.mark.public_surface
async def test_expired_tampered_and_replayed_requests(srv: Running) -> None:
    key = new_key(srv)
    body = json.dumps({"SdkAppId": int(srv.app.app_id), "StrRoomIds": ["r1"]}).encode()
    assert "Error" not in await asyncio.to_thread(raw, srv, key, body)
    stale = await asyncio.to_thread(raw, srv, key, body, timestamp=int(time.time()) - 3600)
    assert stale["Error"]["Code"] == "AuthFailure.SignatureExpire"
    tampered = await asyncio.to_thread(raw, srv, key, body.replace(b"r1", b"r2"), signed_body=body)
    assert tampered["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert (await asyncio.to_thread(raw, srv, key, body, action="Nope"))["Error"]["Code"] == "InvalidAction"
    # a state-changing request is carried out once: a replay of its signed bytes gets the first answer
    await srv.member("10001", room_id="r1")
    kick = json.dumps({"BizId": int(srv.app.app_id), "RoomId": "r1", "DeleteType": 2, "Uids": ["10001"]}).encode()
    ts = int(time.time())
    first = await asyncio.to_thread(raw, srv, key, kick, action="DeleteRoomMember", timestamp=ts)
    assert first["DeleteResult"]["Code"] == 0
    await srv.member("10001", room_id="r1")  # back in the room: a second kick would remove it again
    replay = await asyncio.to_thread(raw, srv, key, kick, action="DeleteRoomMember", timestamp=ts)
    assert replay["DeleteResult"] == first["DeleteResult"]
    assert [m.open_id for m in srv.server.web_app[ACTIONS].room(srv.app.app_id, "r1").members.values()] == ["10001"]
    big = json.dumps({"SdkAppId": 1, "StrRoomIds": ["x" * 70000]}).encode()
    assert (await asyncio.to_thread(raw, srv, key, big))["Error"]["Code"] == "RequestSizeLimitExceeded"
    unknown = json.dumps({"SdkAppId": 1, "StrRoomIds": ["r"], "Extra": 1}).encode()
    assert (await asyncio.to_thread(raw, srv, key, unknown))["Error"]["Code"] == "UnknownParameter"
    srv.server.web_app[TC3].rates = BucketTable(rate=1, burst=1)  # the limit as if 200 requests came at once
    codes = [(await asyncio.to_thread(raw, srv, key, body)).get("Error", {}).get("Code") for _ in range(2)]
    assert codes == [None, "RequestLimitExceeded"]
    srv.server.web_app[TC3].keys.close()  # the server fails (its key table gone): still a Tencent Cloud answer
    assert (await asyncio.to_thread(raw, srv, key, body))["Error"]["Code"] == "InternalError"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_authorization_parser_never_crashes(header: str) -> None:
    try:
        tc3.parse_authorization(header)
    except tc3.Tc3Error as exc:
        assert exc.code == "AuthFailure.InvalidAuthorization"


def test_apikey_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert main(["--data-dir", data, "app", "create", "demo", "--app-id", "1400000001"]) == 0
    capsys.readouterr()
    assert main(["--data-dir", data, "apikey", "create", "--note", "backend", "--app", "1400000001", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["secret_id"].startswith("AKID") and len(created["secret_key"]) == 32
    assert (Path(data) / "opengme.db").stat().st_mode & 0o077 == 0
    assert main(["--data-dir", data, "apikey", "list"]) == 0
    listing = capsys.readouterr().out
    assert created["secret_id"] in listing and created["secret_key"] not in listing and "backend" in listing
    assert main(["--data-dir", data, "apikey", "create", "--app", "999"]) == 2
    assert "no app with AppID 999" in capsys.readouterr().err
    assert main(["--data-dir", data, "apikey", "disable", created["secret_id"]]) == 0
    assert main(["--data-dir", data, "apikey", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])[0]["enabled"] is False
    assert main(["--data-dir", data, "apikey", "enable", created["secret_id"]]) == 0
    assert main(["--data-dir", data, "apikey", "delete", created["secret_id"]]) == 0
    assert main(["--data-dir", data, "apikey", "delete", created["secret_id"]]) == 2
    assert "no API key" in capsys.readouterr().err


@pytest.mark.public_surface
async def test_readme_backend_example_lists_a_room(srv: Running) -> None:
    key = new_key(srv)
    await srv.member("10001", room_id="lobby")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "examples" / "gme_backend.py"), key.secret_id, key.secret_key, srv.app.app_id,
        "lobby", "--endpoint", srv.url.removeprefix("http://"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    assert out.decode().split() == ["lobby", "members:", "10001"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_api_bodies_are_parameters_or_a_tencent_cloud_error(body: bytes) -> None:
    allowed = frozenset({"BizId", "RoomId", "Users"})
    try:
        params = tc3_server._params(body, allowed)
    except tc3.Tc3Error as exc:
        assert exc.code in ("InvalidParameter", "UnknownParameter")
        return
    assert isinstance(params, dict) and set(params) <= allowed
