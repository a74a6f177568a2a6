"""GME's server API, wire-compatible: Tencent Cloud API 3.0 (``Version 2018-07-11``, TC3-HMAC-SHA256)
at ``POST /``, so a backend's Tencent Cloud SDK code works with only its endpoint changed.

A request is answered ``{"Response": {…, "RequestId"}}`` with HTTP 200, an error as
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` with Tencent Cloud's common codes.
Checks, in order: version and action headers, the ``Authorization`` header, the SecretId (made by
``opengme apikey create``), the timestamp window (five minutes either way), the body (at most
``MAX_BODY_BYTES`` within the HTTP body deadline), the signature (constant-time), the key's rate
(``RATE`` requests a second) and its AppIDs. TC3 has no nonce: a state-changing request whose signed
bytes come again within the window is answered with its first answer and not carried out twice (in a
cluster on any node: the answers are kept in Redis, see ``opengme.server.shared_records``). The actions are
``opengme.server.actions``; this module only translates GME's parameter and result names.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from opengme.apikeys import ApiKey, ApiKeyStore
from opengme.core.ratelimit import BucketTable
from opengme.core.recording import MAX_USER_LIST, Subscription
from opengme.errors import ErrorCode, GmeError
from opengme.ids import MAX_ID_CHARS
from opengme.logs import fields
from opengme.protocol import tc3 as signing
from opengme.protocol.tc3 import Tc3Error
from opengme.server import actions as actions_
from opengme.server import recording, shared_records
from opengme.server.actions import AdminActions, app_status
from opengme.server.admin import read_body
from opengme.server.shared_records import SharedRecords
from opengme.server.usage import Usage
from opengme.store import App

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.tc3")

PATH = "/"
VERSION = "2018-07-11"
MAX_BODY_BYTES = 65536
RATE = 200.0  # requests a second per SecretId: GME's documented limit for its room actions
MAX_ROOMS = 10  # DescribeRoomInfo: at most 10 RoomIds or StrRoomIds, as GME documents
MAX_USERS = 100
MAX_STAT_DAYS = 31
MAX_REMEMBERED = 4096  # answers kept for replays; past this the expired ones are dropped
JSON = "application/json"  # exactly: the SDKs look for error bodies only under this content type
Params = dict[str, Any]
ActionHandler = Callable[["Tc3Api", ApiKey, Params], Awaitable[Params]]


@dataclass(frozen=True)
class Action:
    handler: ActionHandler
    params: frozenset[str]
    changes_state: bool  # the same signed request again gets the first answer (not carried out twice)


_ACTIONS: dict[str, Action] = {}


def action(name: str, params: set[str], *, changes_state: bool) -> Callable[[ActionHandler], ActionHandler]:
    def register(handler: ActionHandler) -> ActionHandler:
        _ACTIONS[name] = Action(handler, frozenset(params), changes_state)
        return handler

    return register


TC3: web.AppKey[Tc3Api] = web.AppKey("opengme.tc3")


def setup(server: Server) -> None:
    api = Tc3Api(server)
    server.web_app[TC3] = api
    server.web_app.router.add_post(PATH, api.handle)
    server.on_stop.append(api.stop)
    server.metrics.describe("opengme_tc3_requests_total", "counter", "API 3.0 requests, by outcome code.")


class Tc3Api:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.actions: AdminActions = actions_.get(server)
        self.keys = ApiKeyStore(server.settings.data_dir, server.settings.database_url)
        self.rates = BucketTable(RATE, RATE)
        self.answers: dict[str, tuple[float, Params]] = {}  # state-changing requests' answers, by signature
        self.shared = shared_records.get(server)  # a cluster: the answers every node has given

    async def stop(self) -> None:
        self.keys.close()

    async def handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        try:
            result = await self._handle(request)
            response: Params = {**result, "RequestId": request_id}
            code = "OK"
        except Tc3Error as exc:
            code = exc.code
            response = {"Error": {"Code": exc.code, "Message": exc.message}, "RequestId": request_id}
            log.info("API 3.0 request refused", extra=fields(code=exc.code, reason=exc.message,
                                                            action=request.headers.get("X-TC-Action", "")))
        except Exception:  # a bug must still answer as Tencent Cloud does, never with a bare 500
            code = "InternalError"
            log.exception("API 3.0 request failed", extra=fields(action=request.headers.get("X-TC-Action", "")))
            response = {"Error": {"Code": code, "Message": f"the server failed; RequestId {request_id} is in its log"},
                        "RequestId": request_id}
        self.server.metrics.inc("opengme_tc3_requests_total", code=code)
        body = json.dumps({"Response": response}, ensure_ascii=False).encode("utf-8")
        return web.Response(body=body, headers={"Content-Type": JSON})

    def _secret_of(self, secret_id: str) -> ApiKey | None:
        key = self.keys.get(secret_id)
        return key if key is not None and key.enabled else None

    async def _handle(self, request: web.Request) -> Params:
        headers = request.headers
        name = headers.get("X-TC-Action", "")
        if not name:
            raise Tc3Error("MissingParameter", "the X-TC-Action header is missing")
        if headers.get("X-TC-Version", "") != VERSION:
            raise Tc3Error("NoSuchVersion", f"X-TC-Version must be {VERSION} (GME's API version)")
        if request.content_type != JSON:
            raise Tc3Error("InvalidParameter", f"send the parameters as a JSON body (Content-Type: {JSON})")
        auth = signing.parse_authorization(headers.get("Authorization", ""))
        key = await self.server.run_blocking(self._secret_of, auth.secret_id)
        now = time.time()
        # Everything but the signature first, so an unknown or stale request costs no body read.
        timestamp = signing.check_credentials(auth, headers.get("X-TC-Timestamp", ""),
                                              None if key is None else key.secret_key, now)
        assert key is not None
        try:
            body = await read_body(request, self.server.settings.http_body_timeout, MAX_BODY_BYTES)
        except GmeError as exc:
            raise Tc3Error("RequestSizeLimitExceeded" if exc.code is ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT
                           else "InvalidParameter", exc.detail) from None
        lowered = {k.lower(): v for k, v in headers.items()}
        signing.check_signature(auth, timestamp, key.secret_key, request.method, request.rel_url.raw_path, request.query_string,
                                lowered, body)
        found = _ACTIONS.get(name)
        if found is None:
            raise Tc3Error("InvalidAction", f"{name} is not an action of GME {VERSION} that OpenGME serves; "
                           f"see the README's \"Migrating from GME\"")
        if not self.rates.bucket(auth.secret_id, time.monotonic()).take(time.monotonic()):
            raise Tc3Error("RequestLimitExceeded", f"more than {RATE:g} requests a second with this SecretId")
        params = _params(body, found.params)
        if not found.changes_state:
            return await self._carry_out(found, key, params)
        replayed = self._answered(auth.signature, now)
        if replayed is None and self.shared is not None:
            replayed = await self._shared_answer(self.shared, auth.secret_id, auth.signature)
        if replayed is not None:
            return replayed
        kept = False
        try:
            result = await self._carry_out(found, key, params)
            self.answers[auth.signature] = (timestamp + signing.MAX_SKEW, result)
            if self.shared is not None:
                await self.shared.keep_answer(auth.secret_id, auth.signature, result)
                kept = True
        finally:
            if self.shared is not None and not kept:  # failed: the same request may be made again
                await self.shared.forget_answer(auth.secret_id, auth.signature)
        return result

    async def _carry_out(self, found: Action, key: ApiKey, params: Params) -> Params:
        try:
            return await found.handler(self, key, params)
        except GmeError as exc:
            raise Tc3Error(_tc3_code(exc.code), exc.detail) from None

    @staticmethod
    async def _shared_answer(shared: SharedRecords, secret_id: str, signature: str) -> Params | None:
        """A cluster: the first answer another node gave to the same signed request (None: this node
        is the first, and records its answer for the others)."""
        try:
            return await shared.first_answer(secret_id, signature, 2 * signing.MAX_SKEW)
        except TimeoutError:
            raise Tc3Error("FailedOperation", "the same request is still being carried out by another node; "
                           "retry with a new timestamp") from None
        except GmeError as exc:
            raise Tc3Error("FailedOperation", exc.detail) from None

    def _answered(self, signature: str, now: float) -> Params | None:
        """The first answer to a state-changing request whose signed bytes come again within the window
        (a replay, or the same call twice in one second): it is answered, not carried out, again."""
        if len(self.answers) > MAX_REMEMBERED:
            self.answers = {s: kept for s, kept in self.answers.items() if kept[0] >= now}
        kept = self.answers.get(signature)
        return kept[1] if kept is not None and kept[0] >= now else None

    async def app(self, key: ApiKey, biz_id: int) -> App:
        """The app ``biz_id`` when the key may act on it."""
        app_id = str(biz_id)
        if not key.allows(app_id):
            raise Tc3Error("AuthFailure.UnauthorizedOperation", f"this SecretId is not allowed to act on app {app_id}")
        try:
            return await self.actions.app(app_id)
        except GmeError:
            raise Tc3Error("ResourceNotFound", f"no app with BizId {app_id}; see `opengme app list`") from None


def _tc3_code(code: ErrorCode) -> str:
    if code is ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST:
        return "ResourceNotFound"
    if code is ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT:
        return "InvalidParameterValue"
    return "FailedOperation"


def _params(body: bytes, allowed: frozenset[str]) -> Params:
    try:
        params = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        raise Tc3Error("InvalidParameter", "the body must be a JSON object") from None
    if not isinstance(params, dict):
        raise Tc3Error("InvalidParameter", "the body must be a JSON object")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Tc3Error("UnknownParameter", f"unknown parameter(s): {', '.join(unknown)}")
    return params


def _get(params: Params, name: str, kind: type, required: bool = True) -> Any:
    value = params.get(name)
    if value is None:
        if required:
            raise Tc3Error("MissingParameter", f"the parameter {name} is missing")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Tc3Error("InvalidParameter", f"{name} must be {'an integer' if kind is int else kind.__name__}")
    return value


def _ids(params: Params, name: str, limit: int) -> list[str]:
    """A list parameter of ids (integers or strings), as strings."""
    values = _get(params, name, list, required=False) or []
    if len(values) > limit or not all(
            isinstance(v, (int, str)) and not isinstance(v, bool) and 0 < len(str(v)) <= MAX_ID_CHARS for v in values):
        raise Tc3Error("InvalidParameterValue", f"{name} must be a list of at most {limit} ids")
    return [str(v) for v in values]


def _one_of(params: Params, names: tuple[str, str]) -> str:
    """An id given as either of two parameters (GME's int and string forms)."""
    for name in names:
        value = params.get(name)
        if value not in (None, "", 0):
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise Tc3Error("InvalidParameter", f"{name} must be an integer or a string")
            return str(value)
    raise Tc3Error("MissingParameter", f"give {names[0]} or {names[1]}")


def _split_ids(open_ids: list[str]) -> tuple[list[int], list[str]]:
    """Numeric openids for GME's integer lists (Uins), the others for the string lists (StrUins)."""
    return [int(o) for o in open_ids if o.isdigit()], [o for o in open_ids if not o.isdigit()]


def _batch_result(outcomes: list[tuple[str, ErrorCode]]) -> tuple[int, str]:
    """One Code/ErrorMsg for a batch: 0, or the first failure's code with every failed openid named."""
    failed = [(o, c) for o, c in outcomes if c is not ErrorCode.AV_OK]
    if not failed:
        return 0, ""
    return int(failed[0][1]), "; ".join(f"{o}: {c.name} ({int(c)})" for o, c in failed)


# --- voice-chat rooms ----------------------------------------------------------------------------


@action("DescribeRoomInfo", {"SdkAppId", "RoomIds", "StrRoomIds"}, changes_state=False)
async def _describe_room_info(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "SdkAppId", int))
    int_ids, str_ids = _ids(params, "RoomIds", MAX_ROOMS), _ids(params, "StrRoomIds", MAX_ROOMS)
    if (not int_ids and not str_ids) or len(int_ids) + len(str_ids) > MAX_ROOMS:
        raise Tc3Error("InvalidParameterValue", f"give 1-{MAX_ROOMS} rooms in RoomIds or StrRoomIds")
    rooms = {r.room_id: r for r in await api.actions.live_rooms(app.app_id)}  # a cluster: every node's
    users = []
    for room_id, is_int in [(r, True) for r in int_ids] + [(r, False) for r in str_ids]:
        room = rooms.get(room_id)
        uins, str_uins = _split_ids([m.open_id for m in room.members] if room is not None else [])
        users.append({"RoomId": int(room_id) if is_int and room_id.isdigit() else 0,
                      "StrRoomId": room_id, "Uins": uins, "StrUins": str_uins})
    return {"Result": 0, "RoomUsers": users}


@action("DeleteRoomMember", {"BizId", "RoomId", "DeleteType", "Uids", "StrUids"}, changes_state=True)
async def _delete_room_member(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    room_id = str(_get(params, "RoomId", str))
    delete_type = _get(params, "DeleteType", int)
    try:
        if delete_type == 1:
            await api.actions.dissolve(app.app_id, room_id)
            return {"DeleteResult": {"Code": 0, "ErrorMsg": ""}}
        if delete_type != 2:
            raise Tc3Error("InvalidParameterValue", "DeleteType must be 1 (dissolve the room) or 2 (remove users)")
        open_ids = _ids(params, "Uids", MAX_USERS) + _ids(params, "StrUids", MAX_USERS)
        if not open_ids:
            raise Tc3Error("MissingParameter", "DeleteType 2 needs the users to remove in Uids or StrUids")
        code, message = _batch_result(await api.actions.kick(app.app_id, room_id, open_ids))
    except GmeError as exc:
        code, message = int(exc.code), exc.detail
    return {"DeleteResult": {"Code": code, "ErrorMsg": message}}


@action("ModifyUserMicStatus", {"BizId", "RoomId", "Users"}, changes_state=True)
async def _modify_user_mic_status(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    room_id = str(_get(params, "RoomId", str))
    users = _get(params, "Users", list)
    if not 1 <= len(users) <= MAX_USERS or not all(isinstance(u, dict) for u in users):
        raise Tc3Error("InvalidParameterValue", f"Users must list 1-{MAX_USERS} {{Uid or StrUid, EnableMic}}")
    changes = []
    for user in users:
        enable = _get(user, "EnableMic", int)
        if enable not in (1, 2):
            raise Tc3Error("InvalidParameterValue", "EnableMic must be 1 (close: server mute) or 2 (open: unmute)")
        changes.append((_one_of(user, ("StrUid", "Uid")), enable == 1))
    try:
        code, message = _batch_result(await api.actions.set_muted(app.app_id, room_id, changes))
    except GmeError as exc:
        code, message = int(exc.code), exc.detail
    return {"Result": code, "ErrMsg": message}


@action("DescribeUserInAndOutTime", {"BizId", "RoomId", "UserId", "UserIdStr", "RoomIdStr"}, changes_state=False)
async def _describe_user_in_and_out_time(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    room_id, open_id = _one_of(params, ("RoomIdStr", "RoomId")), _one_of(params, ("UserIdStr", "UserId"))
    stays, duration = await api.actions.in_out(app.app_id, room_id, open_id)
    now = int(time.time())
    return {"InOutList": [{"StartTime": int(s), "EndTime": now if e is None else int(e)} for s, e in stays],
            "Duration": int(duration)}


# --- apps and usage ------------------------------------------------------------------------------


def _conf_status(params: Params, name: str) -> bool | None:
    conf = _get(params, name, dict, required=False)
    if conf is None or conf.get("Status") is None:
        return None
    if conf["Status"] not in ("open", "close"):
        raise Tc3Error("InvalidParameterValue", f"{name}.Status must be open or close")
    return bool(conf["Status"] == "open")


def _status_word(on: bool) -> str:
    return "open" if on else "close"


@action("CreateApp", {"AppName", "ProjectId", "EngineList", "RegionList", "RealtimeSpeechConf", "VoiceMessageConf",
                      "VoiceFilterConf", "AsrConf", "Tags"}, changes_state=True)
async def _create_app(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    if key.app_ids:
        raise Tc3Error("AuthFailure.UnauthorizedOperation", "a SecretId limited to some AppIDs cannot create apps")
    name = _get(params, "AppName", str)
    switches = {s: v for s, v in (("voice", _conf_status(params, "RealtimeSpeechConf")),
                                  ("ptt", _conf_status(params, "VoiceMessageConf")),
                                  ("stt", _conf_status(params, "AsrConf"))) if v is not None}
    app = await api.actions.create_app(name)
    if switches:
        store = api.server.store
        app = await api.server.run_blocking(lambda: store.set(app.app_id, **switches))
    log.info("app created through API 3.0", extra=fields(app_id=app.app_id, secret_id=key.secret_id))
    return {"Data": {
        "BizId": int(app.app_id), "AppName": app.name, "ProjectId": params.get("ProjectId") or 0,
        "SecretKey": app.key, "CreateTime": int(app.created_at),
        "RealtimeSpeechConf": {"Status": _status_word(app.voice), "Quality": "high"},
        "VoiceMessageConf": {"Status": _status_word(app.ptt), "Language": "all"},
        "AsrConf": {"Status": _status_word(app.stt)},
    }}


@action("ModifyAppStatus", {"BizId", "Status"}, changes_state=True)
async def _modify_app_status(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    status = _get(params, "Status", str)
    if status not in ("open", "close"):
        raise Tc3Error("InvalidParameterValue", "Status must be open or close")
    app = await api.actions.set_app_open(app.app_id, status == "open")
    return {"Data": {"BizId": int(app.app_id), "Status": status}}


@action("DescribeApplicationList", {"ProjectId", "PageNo", "PageSize", "SearchText", "TagSet", "Filters",
                                    "NewVersion"}, changes_state=False)
async def _describe_application_list(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    page = _get(params, "PageNo", int, required=False) or 0
    size = _get(params, "PageSize", int, required=False) or 200
    text = _get(params, "SearchText", str, required=False) or ""
    if page < 0 or not 1 <= size <= 1000:
        raise Tc3Error("InvalidParameterValue", "PageNo must be ≥ 0 and PageSize 1-1000")
    apps = [a for a in await api.actions.apps() if key.allows(a.app_id) and text.lower() in a.name.lower()
            and a.app_id.isdigit()]

    def service(on: bool) -> Params:
        return {"Status": 0 if on else 1}

    listed = [{"BizId": int(a.app_id), "AppName": a.name, "ProjectId": 0, "AppStatus": app_status(a),
               "CreateTime": int(a.created_at), "AppType": 0,
               "ServiceConf": {"RealTimeSpeech": service(a.voice), "VoiceMessage": service(a.ptt),
                               "RealTimeAsr": service(a.stt)}}
              for a in apps[page * size:(page + 1) * size]]
    return {"ApplicationList": listed, "Total": len(apps)}


def _date(params: Params, name: str) -> date:
    try:
        return date.fromisoformat(_get(params, name, str))
    except ValueError:
        raise Tc3Error("InvalidParameterValue", f"{name} must be a date like 2018-07-13") from None


@action("DescribeAppStatistics", {"BizId", "StartDate", "EndDate", "Services"}, changes_state=False)
async def _describe_app_statistics(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    first, last = _date(params, "StartDate"), _date(params, "EndDate")
    if not 0 <= (last - first).days < MAX_STAT_DAYS:
        raise Tc3Error("InvalidParameterValue", f"EndDate must be from StartDate to {MAX_STAT_DAYS - 1} days after it")
    services = set(_get(params, "Services", list, required=False) or ["RealTimeSpeech", "VoiceMessage", "SpeechToText"])
    days = await api.actions.statistics(app.app_id, first.isoformat(), last.isoformat())
    items = []
    for n in range((last - first).days + 1):
        day = (first + timedelta(days=n)).isoformat()
        counts = days.get(day, {})
        item: Params = {"Date": day}
        if "RealTimeSpeech" in services:
            minutes = round(counts.get(Usage.VOICE_SECONDS, 0.0) / 60)
            item["RealtimeSpeechStatisticsItem"] = {"MainLandDau": 0, "MainLandPcu": 0, "MainLandDuration": minutes,
                                                    "OverseaDau": 0, "OverseaPcu": 0, "OverseaDuration": 0}
        if "VoiceMessage" in services:
            item["VoiceMessageStatisticsItem"] = {"Dau": int(counts.get(Usage.PTT_UPLOADS, 0))}
        if "SpeechToText" in services:
            item["AudioTextStatisticsItem"] = {"Data": round(counts.get(Usage.STT_SECONDS, 0.0), 3)}
        items.append(item)
    return {"Data": {"AppStatistics": items}}


# --- server-side recording -----------------------------------------------------------------------


def _subscription(params: Params) -> Subscription:
    given = _get(params, "SubscribeRecordUserIds", dict, required=False) or {}
    return Subscription(tuple(_ids(given, "SubscribeUserIds", MAX_USER_LIST)),
                        tuple(_ids(given, "UnSubscribeUserIds", MAX_USER_LIST)))


@action("StartRecord", {"BizId", "RoomId", "RecordMode", "SubscribeRecordUserIds"}, changes_state=True)
async def _start_record(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    room_id = actions_.check_room_id(str(_get(params, "RoomId", str)))
    task = await recording.get(api.server).start(app.app_id, room_id, _get(params, "RecordMode", int),
                                                 _subscription(params))
    return {"TaskId": task.task_id}


@action("StopRecord", {"TaskId", "BizId"}, changes_state=True)
async def _stop_record(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    await recording.get(api.server).stop_task(app.app_id, _get(params, "TaskId", int))
    return {}


@action("ModifyRecordInfo", {"TaskId", "RecordMode", "BizId", "SubscribeRecordUserIds"}, changes_state=True)
async def _modify_record_info(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    await recording.get(api.server).modify(app.app_id, _get(params, "TaskId", int), _get(params, "RecordMode", int),
                                           _subscription(params))
    return {}


@action("DescribeRecordInfo", {"TaskId", "BizId"}, changes_state=False)
async def _describe_record_info(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    task, files = await recording.get(api.server).describe(app.app_id, _get(params, "TaskId", int))
    return {"RecordInfo": [{"UserId": f.user_id, "FileName": f.file_name, "RecordBeginTime": int(f.begin),
                            "RecordStatus": f.status} for f in files],
            "RecordMode": task.mode, "RoomId": task.room_id}


@action("DescribeTaskInfo", {"BizId", "RoomId"}, changes_state=False)
async def _describe_task_info(api: Tc3Api, key: ApiKey, params: Params) -> Params:
    app = await api.app(key, _get(params, "BizId", int))
    task = await recording.get(api.server).running(app.app_id, str(_get(params, "RoomId", str)))
    if task is None:
        raise Tc3Error("ResourceNotFound", "no recording task runs in this room; start one with StartRecord")
    return {"TaskId": task.task_id, "RecordMode": task.mode, "SubscribeRecordUserIds": task.subscription.to_json()}
