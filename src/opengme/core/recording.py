"""Server-side recording, the pure part (GME's StartRecord family, spec §7.3): modes, who is recorded,
file names, when a file is cut, the placement of voice frames on a wall-clock timeline and the
signed callback bodies. No threads, files or sockets: ``opengme.server.recording`` wires it.

Timeline: the relay hands over each voice packet with its header and arrival time. A stream's frames
go to 20 ms slots by the sender's media timestamp, anchored on arrival (``StreamClock``). Slots no
stream filled are silence, so a file keeps real time and a mixed file lines its members up as they
were heard.

Cuts, as GME does: every ``SEGMENT_SECONDS`` (2 h), and for a member's own file at mic off/on.
Clients do not tell the server about their microphone, but a client with its mic on sends a packet
at least every 400 ms (DTX comfort noise), so ``MIC_GAP`` seconds without any packet mean the mic
went off, and the next packet opens the next file.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

RATE = 48_000  # Hz: every stream is decoded at Opus's full rate, whatever the room type
FRAME_SAMPLES = RATE // 50
FRAME_S = 0.02
RESYNC_FRAMES = 50  # a stream whose media clock and arrivals part by more than 1 s is anchored again
TIMESTAMP_MOD = 1 << 32
SEGMENT_SECONDS = 7200.0
MIC_GAP = 1.5
MIXED_USER = "0"  # GME's UserId of a mixed file
MAX_USER_LIST = 100


class RecordMode(IntEnum):
    """StartRecord's RecordMode."""

    SINGLE = 1  # one file per member
    MIXED = 2  # one file per room
    BOTH = 3


class CallbackMode(IntEnum):
    """The RecordMode field of a callback: which kind of file it is about."""

    SINGLE = 0
    MIXED = 1


class EventType(IntEnum):
    STARTED = 1
    COMPLETED = 2
    UPLOADED = 3


class RecordStatus(IntEnum):
    """DescribeRecordInfo's RecordStatus of a file."""

    RECORDING = 2
    UPLOADING = 12
    UPLOADED = 13
    NOTIFIED = 14


def records_single(mode: int) -> bool:
    return mode in (RecordMode.SINGLE, RecordMode.BOTH)


def records_mixed(mode: int) -> bool:
    return mode in (RecordMode.MIXED, RecordMode.BOTH)


@dataclass(frozen=True)
class Subscription:
    """GME's SubscribeRecordUserIds: an allow list, else a deny list, else everyone."""

    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()

    def includes(self, open_id: str) -> bool:
        if self.subscribe:
            return open_id in self.subscribe
        return open_id not in self.unsubscribe

    def to_json(self) -> dict[str, list[str]]:
        return {"SubscribeUserIds": list(self.subscribe), "UnSubscribeUserIds": list(self.unsubscribe)}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> Subscription:
        """What :meth:`to_json` wrote (a stored task, a cluster bus request)."""
        return cls(tuple(data["SubscribeUserIds"]), tuple(data["UnSubscribeUserIds"]))


def single_file_name(biz_id: str, room_id: str, user_id: str, start: float, seq: int) -> str:
    """GME's name of a member's file: ``bizid_roomid_userid/<start>_<id>_audio.mp3``."""
    return f"{biz_id}_{room_id}_{user_id}/{int(start)}_{seq}_audio.mp3"


def mixed_file_name(biz_id: str, room_id: str, task_id: int, start: float, seq: int) -> str:
    """GME's name of a room's mixed file: ``bizid_roomid/<taskid>_<start>_<id>_audio.mp3``."""
    return f"{biz_id}_{room_id}/{task_id}_{int(start)}_{seq}_audio.mp3"


def callback_body(biz_id: str, room_id: str, user_id: str, task_id: int, mode: CallbackMode, event: EventType,
                  at: float, seq: int, file_name: str) -> bytes:
    """A callback's JSON body with GME's field names (compact: the signature covers these bytes)."""
    body = {"BizID": int(biz_id) if biz_id.isdigit() else biz_id, "RoomID": room_id, "UserID": user_id,
            "TaskID": task_id, "RecordMode": int(mode), "Timestamp": int(at), "EventType": int(event),
            "Detail": {"SeqNo": seq, "FileName": file_name}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def callback_signature(body: bytes, app_key: str) -> str:
    """The ``Signature`` header: hex HMAC-SHA1 of the body, keyed by the app's permission key."""
    return hmac.new(app_key.encode("utf-8"), body, hashlib.sha1).hexdigest()


def retry_delay(attempts: int) -> float:
    """Seconds before the next try of a callback that failed ``attempts`` times: 1, 2, 4 … at most 60."""
    return float(min(60, 2 ** max(0, attempts - 1)))


@dataclass
class StreamClock:
    """Slots (20 ms frame indexes from the task's start) of one stream's frames.

    The sender's media timestamp counts captured frames (and real time across a capture pause), so
    a frame's slot is the previous one's plus the timestamp step; the arrival time only anchors the
    stream, and anchors it again when the two part by more than ``RESYNC_FRAMES`` (a long stall, a
    restarted sender). Network jitter and a sender's burst after a stall therefore neither stretch
    nor tear the audio."""

    start: float
    _slot: int | None = None
    _timestamp: int = 0

    def slot(self, at: float, timestamp: int, frame_samples: int) -> int:
        arrival = round((at - self.start) / FRAME_S)
        if self._slot is not None:
            step = (timestamp - self._timestamp) % TIMESTAMP_MOD
            if step >= TIMESTAMP_MOD // 2:
                step -= TIMESTAMP_MOD  # a late (reordered) frame: before the last one
            index = self._slot + round(step / frame_samples)
            if abs(index - arrival) <= RESYNC_FRAMES:
                if step > 0:
                    self._slot, self._timestamp = index, timestamp
                return index
        self._slot, self._timestamp = arrival, timestamp
        return arrival


@dataclass
class Track:
    """The PCM of one file being written: frames added by slot (mixed by addition), taken in order
    with silence where no frame came. ``first`` is the slot the file starts at."""

    first: int
    taken: int = -1  # the slots before this were handed out already
    _pending: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.taken = self.first

    def add(self, slot: int, pcm: np.ndarray) -> None:
        if slot < self.taken:
            return  # too late: that part of the file is written
        held = self._pending.get(slot)
        if held is None:
            self._pending[slot] = pcm.astype(np.int32)
        else:
            held += pcm

    def take(self, upto: int) -> np.ndarray:
        """int16 samples of the slots ``taken``..``upto`` (exclusive), silence where nothing came."""
        if upto <= self.taken:
            return np.zeros(0, dtype=np.int16)
        out = np.zeros((upto - self.taken) * FRAME_SAMPLES, dtype=np.int32)
        for slot in range(self.taken, upto):
            frame = self._pending.pop(slot, None)
            if frame is not None:
                start = (slot - self.taken) * FRAME_SAMPLES
                out[start:start + FRAME_SAMPLES] = frame
        self.taken = upto
        return np.clip(out, -32768, 32767).astype(np.int16)

    def end(self) -> int:
        """The slot after the last frame added (``taken`` when every frame was handed out)."""
        return max(self._pending) + 1 if self._pending else self.taken

    def seconds(self) -> float:
        return (self.taken - self.first) * FRAME_S
