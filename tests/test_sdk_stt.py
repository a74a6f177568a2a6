"""Speech-to-text and text-to-speech through the SDK (``ctx.get_ptt()``) against real servers: real
read speech uploaded and recognised in the server's worker processes, the stored text answering a
repeat, synthesised messages recognised back, and every speech code of the seed in its situation."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from opengme.codec import voicefile as vf
from opengme.devices import FileMic, MemoryMic
from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.protocol import ptt as proto
from opengme.server import stt as stt_part
from support.audio import resample
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for
from support.speech import JOHN, JOHN_WORDS, read_wav, words
from test_sdk_ptt import closed_port_url, next_event, other_http, player, ptt_of, upload, use_mic

E = ErrorCode
TEXT, SPEECH, UPLOAD = (EventType.PTT_SPEECH2TEXT_COMPLETE, EventType.PTT_TEXT2SPEECH_COMPLETE,
                        EventType.PTT_UPLOAD_COMPLETE)
__all__ = ["other_http"]  # the fixture, used below

pytestmark = pytest.mark.slow  # the servers start worker processes that load the recogniser's model


@pytest.fixture(scope="module")
def john(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real read speech (LibriVox) as a voice message."""
    return vf.encode_voice_file(tmp_path_factory.mktemp("stt") / "john.ogg", read_wav(JOHN))


def text_of(client: SdkClient, file_id: str, **kw: str) -> dict[str, object]:
    assert ptt_of(client).speech_to_text(file_id, **kw) == E.AV_OK
    return next_event(client, TEXT, timeout=60)


@pytest.mark.public_surface
def test_an_uploaded_message_is_recognised_and_a_repeat_answers_from_the_stored_text(
        server: ThreadServer, clients: ClientMaker, john: Path) -> None:
    alice = player(server, clients, "10001")
    bob = player(server, clients, "10002")
    file_id = str(upload(alice, john)["file_id"])
    first = text_of(bob, file_id, language="en-us")  # any openid of the app; the tag in any case
    assert first["result"] == E.AV_OK and first["file_id"] == file_id
    assert words(str(first["text"])) >= JOHN_WORDS
    started = time.monotonic()
    again = text_of(alice, file_id)
    assert again == first and time.monotonic() - started < 2.0
    metrics = server.server.metrics.render().decode()
    assert "opengme_stt_cached_total 1" in metrics and "opengme_stt_recognitions_total 1" in metrics


@pytest.mark.public_surface
def test_text_to_speech_stores_a_message_that_is_recognised_back(server: ThreadServer, clients: ClientMaker,
                                                                  tmp_path: Path) -> None:
    alice = player(server, clients, "10001")
    bob = player(server, clients, "10002")
    said = "The soldiers walked to the castle in the morning."
    assert ptt_of(alice).text_to_speech(said, "en-US-Standard-A", "en-US", 1.0) == E.AV_OK
    made = next_event(alice, SPEECH, timeout=60)
    assert made["result"] == E.AV_OK and made["text"] == said
    file_id = str(made["file_id"])
    assert file_id.startswith(server.url + proto.FILES_PATH + "/")
    got = tmp_path / "tts.ogg"
    assert ptt_of(bob).download_recorded_file(file_id, str(got)) == E.AV_OK
    assert next_event(bob, EventType.PTT_DOWNLOAD_COMPLETE)["result"] == E.AV_OK
    assert 2000 < vf.voice_file_duration_ms(got) < 7000
    heard = text_of(bob, file_id)
    assert heard["result"] == E.AV_OK and {"soldiers", "castle", "morning"} <= words(str(heard["text"]))


@pytest.mark.public_surface
def test_speech_codes_in_their_situations(server: ThreadServer, clients: ClientMaker, john: Path,
                                          other_http) -> None:  # type: ignore[no-untyped-def]
    """32774 no AuthBuffer, 32784 empty/foreign/unknown file id, 32776 AuthBuffer refused, 7012 speech
    (or voice messages) off, 7005 arrears, 32770 no server, 32772 a reply that is not OpenGME's,
    1004 bad arguments or a language no engine supports, 1006 translation."""
    alice = clients(server.url, server.app, "10001", portaudio=False)
    ptt = ptt_of(alice)
    assert text_of(alice, "http://127.0.0.1:1/v1/ptt/files/x")["result"] == E.QAVPTTERROR_S2T_APPINFO_UNSET
    assert ptt.text_to_speech("hello there", "", "en-US", 1.0) == E.AV_OK
    assert next_event(alice, SPEECH)["result"] == E.QAVPTTERROR_S2T_APPINFO_UNSET
    assert ptt.apply_ptt_auth_buffer(server.auth("", "10001")) == E.AV_OK
    file_id = str(upload(alice, john)["file_id"])
    unknown = file_id.rsplit("/", 1)[0] + "/" + "A" * 24
    for bad in ("", "not a url", unknown):
        report = text_of(alice, bad)
        assert report == {"result": E.QAVPTTERROR_S2T_PARAM_NULL, "file_id": bad, "text": ""}

    assert ptt.apply_ptt_auth_buffer(server.auth("", "10002")) == E.AV_OK  # not the init openid
    assert text_of(alice, file_id)["result"] == E.QAVPTTERROR_S2T_SIGN_CHECK_FAIL
    assert ptt.apply_ptt_auth_buffer(server.auth("", "10001")) == E.AV_OK
    for switch, code in (({"stt": False}, E.AV_ERR_SERVICE_NOT_OPENED), ({"ptt": False}, E.AV_ERR_SERVICE_NOT_OPENED),
                         ({"arrears": True}, E.AV_ERR_CHARGE_OVERDUE)):
        server.store.set(server.app.app_id, **switch)
        assert text_of(alice, file_id)["result"] == code
        assert ptt.text_to_speech("hello there", "", "en-US", 1.0) == E.AV_OK
        assert next_event(alice, SPEECH)["result"] == code
        server.store.set(server.app.app_id, stt=True, ptt=True, arrears=False)

    path = proto.FILES_PATH + "/" + "A" * 24
    assert text_of(alice, closed_port_url() + path)["result"] == E.QAVPTTERROR_S2T_NETWORK_FAIL
    for body in (b"<html>hello</html>", b""):
        assert text_of(alice, other_http(200, body) + path)["result"] == E.QAVPTTERROR_S2T_RSP_DATA_DECODE_FAIL
    assert text_of(alice, other_http(502, b"Bad Gateway") + path)["result"] == E.QAVPTTERROR_S2T_RSP_DATA_DECODE_FAIL

    assert text_of(alice, file_id, language="de-DE")["result"] == E.AV_ERR_INVALID_ARGUMENT  # the server's engines
    assert ptt.speech_to_text(file_id, "not a tag!") == E.AV_ERR_INVALID_ARGUMENT
    assert ptt.speech_to_text(file_id, "en-US", "fr-FR") == E.AV_ERR_NOT_IMPLEMENTED
    assert ptt.translate_text("hello", "en-US", "fr-FR") == E.AV_ERR_NOT_IMPLEMENTED
    for text, rate in (("x" * 5001, 1.0), ("", 1.0), ("hello", 0.5), ("hello", 1.6)):
        assert ptt.text_to_speech(text, "", "en-US", rate) == E.AV_ERR_INVALID_ARGUMENT
    assert ptt.text_to_speech("hello", "", "de-DE", 1.0) == E.AV_OK  # no voice: the server says so
    assert next_event(alice, SPEECH, timeout=30)["result"] == E.AV_ERR_INVALID_ARGUMENT
    assert ptt.speech_to_text(123) == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert len(alice.events.of(TEXT)) == 13 and len(alice.events.of(SPEECH)) == 5  # none for 1004/1006


@pytest.mark.public_surface
def test_beyond_the_apps_limit_a_request_is_refused_with_32769(make_server, clients: ClientMaker,  # type: ignore[no-untyped-def]
                                                              john: Path) -> None:
    """With ``stt_max_file_jobs = 1``, a second recognition while the first runs is refused at once
    (not queued), and served once the first has finished."""
    server = make_server(stt_max_file_jobs=1)
    alice = player(server, clients, "10001")
    bob = player(server, clients, "10002")
    ids = [str(upload(alice, john)["file_id"]) for _ in range(2)]
    assert ptt_of(alice).speech_to_text(ids[0]) == E.AV_OK
    quota = stt_part.get(server.server).quota
    wait_for([alice], lambda: bool(quota.running), timeout=10)  # the first is in the server's workers
    busy = text_of(bob, ids[1])
    assert busy["result"] == E.QAVPTTERROR_S2T_INTERNAL_ERROR
    assert next_event(alice, TEXT, timeout=60)["result"] == E.AV_OK
    assert text_of(bob, ids[1])["result"] == E.AV_OK


# --- streaming recognition while recording --------------------------------------------------------

RUNNING, COMPLETE = EventType.PTT_STREAMINGRECOGNITION_IS_RUNNING, EventType.PTT_STREAMINGRECOGNITION_COMPLETE


@pytest.mark.public_surface
def test_streaming_recognition_gives_partials_while_recording_then_the_text_and_file_id(
        server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    """A file mic holding real read speech (7 s): partial texts (5007) arrive while it is being
    recorded, the final text (5006) has its key words and a file id that downloads, and
    ``speech_to_text`` on that id answers the same text at once (it was stored with the message).
    A second streaming recognition meanwhile is 32786."""
    alice = player(server, clients, "10001")
    bob = player(server, clients, "10002")
    mic = FileMic(JOHN)
    use_mic(alice, mic)
    ptt = ptt_of(alice)
    path = tmp_path / "streamed.ogg"
    started = time.monotonic()
    assert ptt.start_recording_with_streaming_recognition(str(path), "en-US") == E.AV_OK
    assert ptt.start_recording_with_streaming_recognition(str(tmp_path / "two.ogg")) == \
        E.QAVPTTERROR_ERR_VOICE_STREAMIN_RUNING_ERROR
    wait_for([alice], lambda: any(e["text"] for e in alice.events.of(RUNNING)), timeout=15)
    first_partial = time.monotonic() - started
    assert not mic.exhausted, "a partial text arrived while the words were still being recorded"
    wait_for([alice], lambda: mic.exhausted, timeout=20)
    assert ptt.stop_recording() == E.AV_OK
    done = next_event(alice, COMPLETE, timeout=60)
    partials = alice.events.of(RUNNING)
    assert all(p["result"] == E.AV_OK and p["file_path"] == str(path) and p["file_id"] == "" for p in partials)
    assert len({p["text"] for p in partials}) >= 3, "the hypothesis grew as the words came"
    assert done["result"] == E.AV_OK and done["file_path"] == str(path)
    assert words(str(done["text"])) >= JOHN_WORDS
    file_id = str(done["file_id"])
    assert file_id.startswith(server.url + proto.FILES_PATH + "/")
    assert alice.events.of(EventType.PTT_RECORD_COMPLETE) == []  # streaming mode reports 5006 instead
    asked = time.monotonic()
    assert text_of(bob, file_id) == {"result": E.AV_OK, "file_id": file_id, "text": done["text"]}
    assert time.monotonic() - asked < 2.0
    print(f"first partial {first_partial:.2f} s after the start")
    for again in ("three.ogg", "four.ogg"):  # free again, and again after a cancelled one
        assert ptt.start_recording_with_streaming_recognition(str(tmp_path / again)) == E.AV_OK
        assert ptt.cancel_recording() == E.AV_OK


@pytest.mark.public_surface
def test_streaming_codes(make_server, clients: ClientMaker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """32774 without an AuthBuffer, 1006 with a translation; when the stream is refused (here:
    speech-to-text turned off) the recording goes on, a 5007 says 50012, and the 5006 says 32775 with
    the uploaded file's id, which ``speech_to_text`` recognises once speech-to-text is on again."""
    server = make_server()
    alice = clients(server.url, server.app, "10001", portaudio=False)
    ptt = ptt_of(alice)
    assert ptt.start_recording_with_streaming_recognition(str(tmp_path / "a.ogg")) == E.QAVPTTERROR_S2T_APPINFO_UNSET
    assert ptt.apply_ptt_auth_buffer(server.auth("", "10001")) == E.AV_OK
    assert ptt.start_recording_with_streaming_recognition(str(tmp_path / "a.ogg"), "en-US", "fr-FR") == \
        E.AV_ERR_NOT_IMPLEMENTED
    server.store.set(server.app.app_id, stt=False)  # the stream is refused; recording and upload are not
    mic = MemoryMic()
    use_mic(alice, mic)
    path = tmp_path / "b.ogg"
    assert ptt.start_recording_with_streaming_recognition(str(path)) == E.AV_OK
    mic.push(resample(read_wav(JOHN)[: 3 * 16_000], 16_000, 48_000))
    wait_for([alice], lambda: any(e["result"] == E.QAVPTTERROR_ERR_VOICE_STREAMING_ASR_ERROR
                                  for e in alice.events.of(RUNNING)), timeout=10)
    wait_for([alice], lambda: mic.buffered_samples < 960, timeout=10)
    assert ptt.stop_recording() == E.AV_OK
    done = next_event(alice, COMPLETE, timeout=30)
    assert done["result"] == E.QAVPTTERROR_STREAMIN_RECORD_SUC_REC_FAIL and done["file_path"] == str(path)
    server.store.set(server.app.app_id, stt=True)
    retried = text_of(alice, str(done["file_id"]))
    assert retried["result"] == E.AV_OK and "john" in words(str(retried["text"]))
