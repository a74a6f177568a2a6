"""``RoomAudio``: keeps a Context's media engine in line with its room, and names what it hears.

After every API call and every ``poll`` the core asks it to follow the session's room: a new media
key (entry, switch, resume) starts a new media session, a room-type change reaches the codecs, the
member list reaches the downlink, the server's loss report reaches the encoder; leaving stops the
media, closes the devices and clears the room-scoped settings. On the way back it turns the engine's
events (by tinyid) into GME events (by openid) and adds CHANGE_ROOM_QUALITY every 2 s, and at once
when the media path goes silent (no echo for 3 s, loss reads 1.0) or answers again.

After a reconnect, members that were speaking get NO_AUDIO (the new media session never heard them;
those still talking get HAS_AUDIO again); after a switch the old room's members get EXIT only.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opengme.events import EventType, RoomType
from opengme.protocol.signalling import media_key
from opengme.sdk.media_session import CustomData, MediaEvent, QualityReport, Speaking, Volumes
from opengme.sdk.session import Event, RoomState, Session

if TYPE_CHECKING:
    from opengme.sdk.core import SdkCore
    from opengme.sdk.media import MediaEngine


def custom_data_event(event: CustomData, sender: str) -> dict[str, object]:
    """CUSTOMDATA_UPDATE's payload: GME's ``sub_type`` 0, ``content`` (the data as UTF-8 text, as
    GME's JSON carries it; undecodable bytes become U+FFFD) and ``senderid``; ``content_bytes`` is
    OpenGME's addition, the data exactly as sent."""
    return {"sub_type": 0, "content": event.data.decode("utf-8", "replace"), "senderid": sender,
            "content_bytes": event.data}


class RoomAudio:
    """The room → media link of one Context (see the module docstring)."""

    def __init__(self, core: SdkCore) -> None:
        self._core = core
        self.reset()

    def reset(self) -> None:
        """Out of the room: nothing applied, nothing reported."""
        self.in_room = False
        self.members: Mapping[str, int] = {}
        """The room's other members (openid → tinyid), as last given to the engine."""
        self._stale = True  # the engine's media session has not been given the members yet
        self._media_room: RoomState | None = None  # the room the engine's media session belongs to
        self._quality_seen: object = None  # the server's last `quality` report, as applied
        self._quality: QualityReport | None = None  # the media session's CHANGE_ROOM_QUALITY timing

    def sync(self, session: Session, now: float) -> list[Event]:
        """Follow the session's room; the GME events that arose on the media side meanwhile."""
        events: list[Event] = []
        core = self._core
        room = core.room()
        if room is None:
            if self.in_room:
                self._leave()
            return events
        if not self.in_room:
            self._enter()
        engine = core.engine
        key = media_key(room.media) if room.media is not None else None  # validated on arrival
        if key is not None and key != engine.key:
            assert room.media is not None
            host = urlsplit(room.server_url or core.server_url).hostname or "127.0.0.1"  # the admitting node's
            ended = engine.start_room(key, room.tinyid, RoomType(room.room_type), host, room.media["udp_port"], now)
            before, self._media_room = self._media_room, room
            if before is not None:  # the old session's last events, named as it knew them, for members
                # still here: those gone (all of them after a switch) get the session's EXIT instead
                self._publish(events, ended, {t: o for t, o in before.open_ids.items() if o in room.tinyids})
            self._stale = True
            self._quality = QualityReport(now)
        if engine.key is None:
            return events
        engine.set_room_type(RoomType(room.room_type))
        members = {o: t for o, t in room.tinyids.items() if o != session.open_id}
        if self._stale or members != self.members:
            self.members, self._stale = members, False
            engine.apply(core.audio, members)
        if room.quality is not None and room.quality is not self._quality_seen:
            self._quality_seen = room.quality
            engine.set_uplink_loss(float(room.quality["uplink_loss"]))
        self._collect(events, engine, room, now)
        return events

    def _collect(self, events: list[Event], engine: MediaEngine, room: RoomState, now: float) -> None:
        """The engine's events, and the quality report when one is due."""
        self._publish(events, engine.take_events(), room.open_ids)
        if self._quality is None:
            return
        loss = float(room.quality["uplink_loss"]) if room.quality is not None else None
        report = self._quality.poll(now, silent=engine.silent, uplink_loss=loss, rtt_s=engine.rtt)
        if report is not None:
            events.append((EventType.CHANGE_ROOM_QUALITY, report))

    @staticmethod
    def _publish(events: list[Event], media_events: Iterable[MediaEvent], open_ids: Mapping[int, str]) -> None:
        """Engine events as GME events, naming members through ``open_ids`` (unknown tinyids are
        dropped). Consecutive speaking changes of one kind share one USER_UPDATE, as GME's user_list."""
        for event in media_events:
            if isinstance(event, Speaking):
                open_id = open_ids.get(event.tinyid)
                if open_id is None:
                    continue
                last = events[-1] if events else None
                if last is not None and last[0] is EventType.USER_UPDATE and last[1]["event_id"] == event.event:
                    last[1]["user_list"].append(open_id)
                else:
                    events.append((EventType.USER_UPDATE, {"event_id": event.event, "user_list": [open_id]}))
            elif isinstance(event, Volumes):
                levels = {open_ids[t]: v for t, v in event.levels.items() if t in open_ids}
                events.append((EventType.USER_VOLUMES, levels))
            elif isinstance(event, CustomData) and event.tinyid in open_ids:
                events.append((EventType.CUSTOMDATA_UPDATE, custom_data_event(event, open_ids[event.tinyid])))

    def _enter(self) -> None:
        """Mic and speaker are off after entry (GME); a device test ends."""
        if self._core.audio.device_test:
            self._core.end_device_test()
        self.in_room = True

    def _leave(self) -> None:
        """Devices close on exit; the room-scoped settings go (the role included, GME)."""
        core = self._core
        core.engine.stop_room()
        core.close_devices()
        self.reset()
        core.update_audio(core.audio.after_exit())

