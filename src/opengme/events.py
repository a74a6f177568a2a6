"""GME's event numbers, sub-event ids and room types (the 2.x numbering of the SDK header).

One registry: every layer takes event numbers from here, never as bare literals.
"""
from __future__ import annotations

from enum import IntEnum


class EventType(IntEnum):
    """``ITMG_MAIN_EVENT_TYPE_*`` / ``ITMG_MAIN_EVNET_TYPE_*`` values of GME SDK 2.x."""

    NONE = 0
    ENTER_ROOM = 1
    EXIT_ROOM = 2
    ROOM_DISCONNECT = 3
    USER_UPDATE = 4
    NUMBER_OF_USERS_UPDATE = 7
    NUMBER_OF_AUDIOSTREAMS_UPDATE = 8
    RECONNECT_START = 11
    RECONNECT_SUCCESS = 12
    SWITCH_ROOM = 13
    CHANGE_ROOM_TYPE = 21
    AUDIO_DATA_EMPTY = 22
    ROOM_SHARING_START = 23
    ROOM_SHARING_STOP = 24
    SPEAKER_DEFAULT_DEVICE_CHANGED = 1008
    SPEAKER_NEW_DEVICE = 1009
    SPEAKER_LOST_DEVICE = 1010
    MIC_NEW_DEVICE = 1011
    MIC_LOST_DEVICE = 1012
    MIC_DEFAULT_DEVICE_CHANGED = 1013
    USER_VOLUMES = 1020
    CHANGE_ROOM_QUALITY = 1022
    ACCOMPANY_FINISH = 1090
    SERVER_AUDIO_ROUTE_EVENT = 1091
    CUSTOMDATA_UPDATE = 1092
    REALTIME_ASR = 1093
    CHANGE_TEAM_ID = 1095
    PTT_RECORD_COMPLETE = 5001
    PTT_UPLOAD_COMPLETE = 5002
    PTT_DOWNLOAD_COMPLETE = 5003
    PTT_PLAY_COMPLETE = 5004
    PTT_SPEECH2TEXT_COMPLETE = 5005
    PTT_STREAMINGRECOGNITION_COMPLETE = 5006
    PTT_STREAMINGRECOGNITION_IS_RUNNING = 5007
    PTT_TEXT2SPEECH_COMPLETE = 5008
    PTT_TRANSLATE_TEXT_COMPLETE = 5009
    ROOM_MANAGEMENT_OPERATOR = 6000
    # OpenGME extension (GME's invitation module is demo-only and has no event number).
    INVITATION = 9001


class UserUpdateEvent(IntEnum):
    """``event_id`` of USER_UPDATE (``ITMG_EVENT_ID_USER_*``)."""

    ENTER = 1
    EXIT = 2
    HAS_AUDIO = 5
    NO_AUDIO = 6
    MIC_OPENED = 11
    MIC_CLOSED = 12


class RoomType(IntEnum):
    """``ITMG_ROOM_TYPE_*``: sound quality of a room."""

    FLUENCY = 1
    STANDARD = 2
    HIGHQUALITY = 3


class ChangeRoomTypeSubEvent(IntEnum):
    """``sub_event_type`` of CHANGE_ROOM_TYPE."""

    ENTERROOM = 1
    START = 2
    COMPLETE = 3
    REQUEST = 4


class InvitationSubEvent(IntEnum):
    """``sub_event_type`` of OpenGME's INVITATION event."""

    RECEIVED = 1
    ACCEPTED = 2
    REFUSED = 3
    CANCELED = 4


class AudioRole(IntEnum):
    """``ITMG_AUDIO_MEMBER_ROLE``."""

    ANCHOR = 0
    AUDIENCE = 1
