"""Live captions through the SDK (``ctx.start_realtime_asr``) against a real server: the server
recognises the speaker's Opus stream it relays, and every member of the room gets REALTIME_ASR."""
from __future__ import annotations

import pytest

from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for
from support.speech import JOHN, words

E = ErrorCode
ASR = EventType.REALTIME_ASR
START, CONTENT, END = 0, 1, 2

pytestmark = pytest.mark.slow


def join(server: ThreadServer, clients: ClientMaker, open_ids: list[str]) -> list[SdkClient]:
    made = [clients(server.url, server.app, o, portaudio=False) for o in open_ids]
    for c in made:
        assert c.ctx.enter_room("captions", RoomType.FLUENCY, server.auth("captions", c.open_id)) == E.AV_OK
    wait_for(made, lambda: all(c.ctx.is_room_entered() for c in made))
    return made


@pytest.mark.public_surface
def test_captions_of_a_speaker_reach_another_member(server: ThreadServer, clients: ClientMaker) -> None:
    alice, bob = join(server, clients, ["10001", "10002"])
    assert alice.ctx.start_realtime_asr("en-US") == E.AV_OK
    wait_for([alice, bob], lambda: any(e["sub_type"] == START for e in bob.events.of(ASR)), timeout=10)
    start = bob.events.of(ASR)[0]
    assert start["result"] == E.AV_OK and start["open_id"] == "10001"
    ctrl = alice.ctx.get_audio_ctrl()
    assert ctrl.use_mic_file(str(JOHN)) == E.AV_OK and ctrl.enable_mic(True) == E.AV_OK

    def finals() -> list[dict[str, object]]:
        return [e for e in bob.events.of(ASR) if e["sub_type"] == CONTENT and e["final"]]

    wait_for([alice, bob], lambda: any(e["sub_type"] == CONTENT for e in bob.events.of(ASR)), timeout=15)
    wait_for([alice, bob], lambda: bool(finals()), timeout=30)
    heard = set().union(*(words(str(e["text"])) for e in finals()))
    partials = [e for e in bob.events.of(ASR) if e["sub_type"] == CONTENT and not e["final"]]
    assert partials and all(e["open_id"] == "10001" and e["sentence_id"] >= 1 for e in partials + finals())
    assert len(heard & {"john", "leisure", "consider", "power", "dashwood"}) >= 2, heard
    assert [e["sub_type"] for e in alice.events.of(ASR)][:1] == [START]  # the speaker gets them too
    assert alice.ctx.stop_realtime_asr() == E.AV_OK
    wait_for([alice, bob], lambda: bob.events.of(ASR)[-1]["sub_type"] == END, timeout=15)


@pytest.mark.public_surface
def test_captions_refusals(server: ThreadServer, clients: ClientMaker) -> None:
    """Outside a room 1201 at once; the app's stt switch off 7012 and a language without an engine
    1004 arrive as REALTIME_ASR START with the code."""
    (alice,) = join(server, clients, ["10001"])
    server.store.set(server.app.app_id, stt=False)
    assert alice.ctx.start_realtime_asr() == E.AV_OK
    wait_for([alice], lambda: bool(alice.events.of(ASR)), timeout=10)
    assert alice.events.of(ASR)[-1]["result"] == E.AV_ERR_SERVICE_NOT_OPENED
    server.store.set(server.app.app_id, stt=True)
    assert alice.ctx.start_realtime_asr("de-DE") == E.AV_OK
    wait_for([alice], lambda: len(alice.events.of(ASR)) == 2, timeout=10)
    assert alice.events.of(ASR)[-1]["result"] == E.AV_ERR_INVALID_ARGUMENT
    assert alice.ctx.start_realtime_asr(5) == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert alice.ctx.exit_room() == E.AV_OK
    wait_for([alice], lambda: not alice.ctx.is_room_entered())
    assert alice.ctx.start_realtime_asr() == E.AV_ERR_ROOM_NOT_EXIST


@pytest.mark.public_surface
def test_captions_end_when_the_app_turns_speech_to_text_off(server: ThreadServer, clients: ClientMaker,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from opengme.server import captions as captions_part

    monkeypatch.setattr(captions_part, "RECHECK", 0.3)  # 10 s in production
    alice, bob = join(server, clients, ["10001", "10002"])
    assert alice.ctx.start_realtime_asr() == E.AV_OK
    wait_for([alice, bob], lambda: [e["sub_type"] for e in bob.events.of(ASR)] == [START], timeout=10)
    server.store.set(server.app.app_id, stt=False)
    wait_for([alice, bob], lambda: [e["sub_type"] for e in bob.events.of(ASR)] == [START, END], timeout=10)
    assert alice.events.of(ASR)[-1]["sub_type"] == END and alice.events.of(ASR)[-1]["result"] == E.AV_OK
    server.store.set(server.app.app_id, stt=True)
