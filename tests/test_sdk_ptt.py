"""Voice messages through the SDK (``ctx.get_ptt()``) against real servers: record from a file or
memory mic, upload, download by file id from another openid, play to a file speaker; and every
recording, upload, download and playback code of the seed in its situation."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from opengme.codec import voicefile as vf
from opengme.devices import FileMic, MemoryMic
from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.protocol import ptt as proto
from opengme.sdk import Ptt
from support.audio import align, clip, correlation, resample, write_wav
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for

E = ErrorCode
RECORD, UPLOAD, DOWNLOAD, PLAY = (EventType.PTT_RECORD_COMPLETE, EventType.PTT_UPLOAD_COMPLETE,
                                  EventType.PTT_DOWNLOAD_COMPLETE, EventType.PTT_PLAY_COMPLETE)


# --- helpers ------------------------------------------------------------------------------------



def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        return pcm.reshape(-1, w.getnchannels())[:, 0], w.getframerate()


def ptt_of(client: SdkClient) -> Ptt:
    return client.ctx.get_ptt()


def next_event(client: SdkClient, event: EventType, timeout: float = 10.0) -> dict[str, object]:
    """Poll until one more ``event`` arrived; its payload."""
    count = len(client.events.of(event))
    wait_for([client], lambda: len(client.events.of(event)) > count, timeout)
    return client.events.of(event)[-1]


def player(server: ThreadServer, clients: ClientMaker, open_id: str, url: str | None = None) -> SdkClient:
    """An initialised context with its PTT AuthBuffer applied."""
    client = clients(url or server.url, server.app, open_id, portaudio=False)
    assert ptt_of(client).apply_ptt_auth_buffer(server.auth("", open_id)) == E.AV_OK
    return client


def use_mic(client: SdkClient, mic: MemoryMic | FileMic) -> None:
    audio = client.ctx.get_audio_ctrl()
    assert audio.register_mic(mic) == E.AV_OK and audio.select_mic(mic.id) == E.AV_OK


def record(client: SdkClient, path: Path, seconds: float) -> dict[str, object]:
    """Record ``seconds`` of real speech from a memory mic; the 5001 payload."""
    mic = MemoryMic()
    use_mic(client, mic)
    assert ptt_of(client).start_recording(str(path)) == E.AV_OK
    mic.push(resample(clip(seconds), 16_000, 48_000))
    wait_for([client], lambda: mic.buffered_samples < 960)
    assert ptt_of(client).stop_recording() == E.AV_OK
    return next_event(client, RECORD)


@pytest.fixture(scope="module")
def message(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s voice message of real speech, as the recorder writes them."""
    return vf.encode_voice_file(tmp_path_factory.mktemp("ptt") / "m.ogg", clip(2.0))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder of the test's own files (the servers keep their data next to it)."""
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def other_http() -> Iterator[Callable[..., str]]:
    """A plain HTTP server that is not OpenGME (a misconfigured proxy): every request gets the
    status and body given, after ``delay`` seconds; returns its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(status: int, body: bytes, delay: float = 0.0) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def upload(client: SdkClient, path: Path | str) -> dict[str, object]:
    assert ptt_of(client).upload_recorded_file(str(path)) == E.AV_OK
    return next_event(client, UPLOAD)


def download(client: SdkClient, file_id: str, path: Path | str) -> dict[str, object]:
    assert ptt_of(client).download_recorded_file(file_id, str(path)) == E.AV_OK
    return next_event(client, DOWNLOAD)


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_record_upload_download_play_end_to_end(server: ThreadServer, clients: ClientMaker, files: Path) -> None:
    """A file mic holding real speech → record → upload → another openid downloads → plays to a
    file speaker, and what it hears is the speech (aligned envelope correlation)."""
    said = clip(4.0)
    alice = player(server, clients, "10001")
    bob = player(server, clients, "10002")
    mic = FileMic(write_wav(files / "said.wav", said, 16_000))
    use_mic(alice, mic)
    recorded = files / "out" / "message.ogg"
    recorded.parent.mkdir()
    assert ptt_of(alice).start_recording(str(recorded)) == E.AV_OK
    wait_for([alice], lambda: ptt_of(alice).get_mic_level() > 30, timeout=5)  # speech is being recorded
    wait_for([alice], lambda: mic.exhausted, timeout=15)
    assert ptt_of(alice).stop_recording() == E.AV_OK
    assert next_event(alice, RECORD) == {"result": E.AV_OK, "file_path": str(recorded)}
    code, duration = ptt_of(alice).get_voice_file_duration(str(recorded))
    assert code == E.AV_OK and 3800 <= duration <= 4100
    assert ptt_of(alice).get_file_size(str(recorded)) == (E.AV_OK, recorded.stat().st_size)
    assert 4000 < recorded.stat().st_size < 4.2 * 24_000 / 8 + 2000  # ~20 kbps

    uploaded = upload(alice, recorded)
    assert uploaded["result"] == E.AV_OK and uploaded["file_path"] == str(recorded)
    file_id = str(uploaded["file_id"])
    assert file_id.startswith(server.url + proto.FILES_PATH + "/")

    got = files / "got.ogg"
    assert download(bob, file_id, got) == {"result": E.AV_OK, "file_path": str(got), "file_id": file_id}
    assert got.read_bytes() == recorded.read_bytes()

    heard_wav = files / "heard.wav"
    assert bob.ctx.get_audio_ctrl().use_speaker_file(str(heard_wav)) == E.AV_OK
    assert ptt_of(bob).play_recorded_file(str(got)) == E.AV_OK
    wait_for([bob], lambda: ptt_of(bob).get_speaker_level() > 30, timeout=5)
    assert next_event(bob, PLAY, timeout=15) == {"result": E.AV_OK, "file_path": str(got)}
    heard, rate = read_wav(heard_wav)  # the speaker closed after playback: the file is complete
    heard16 = resample(heard, rate, 16_000)
    lag, aligned = align(heard16, said, 16_000)
    env = [np.sqrt((x[: len(x) // 320 * 320].reshape(-1, 320).astype(np.float64) ** 2).mean(axis=1))
           for x in (aligned, said)]
    assert correlation(*env) > 0.9, lag


@pytest.mark.public_surface
def test_max_length_stops_by_itself_and_pause_leaves_audio_out(server: ThreadServer, clients: ClientMaker,
                                                                files: Path) -> None:
    alice = player(server, clients, "10001")
    ptt = ptt_of(alice)
    assert ptt.set_max_message_length(1500) == E.AV_OK
    mic = MemoryMic()
    use_mic(alice, mic)
    out = files / "capped.ogg"
    assert ptt.start_recording(str(out)) == E.AV_OK
    mic.push(resample(clip(3.0), 16_000, 48_000))
    assert next_event(alice, RECORD, timeout=10) == {"result": E.AV_OK, "file_path": str(out)}
    assert ptt.get_voice_file_duration(str(out)) == (E.AV_OK, 1500)
    assert ptt.stop_recording() == E.QAVPTTERROR_RECORDER_RECORD_NOT_START  # it ended already

    mic = MemoryMic()  # the first one still holds the 1.5 s the limit left out
    use_mic(alice, mic)
    assert ptt.set_max_message_length(58_000) == E.AV_OK
    paused = files / "paused.ogg"
    assert ptt.start_recording(str(paused)) == E.AV_OK
    mic.push(resample(clip(1.2), 16_000, 48_000))
    wait_for([alice], lambda: mic.buffered_samples < 960)
    assert ptt.pause_recording() == E.AV_OK
    mic.push(resample(clip(1.0), 16_000, 48_000))
    wait_for([alice], lambda: mic.buffered_samples < 960)
    assert ptt.resume_recording() == E.AV_OK
    mic.push(resample(clip(0.5), 16_000, 48_000))
    wait_for([alice], lambda: mic.buffered_samples < 960)
    assert ptt.stop_recording() == E.AV_OK
    assert next_event(alice, RECORD)["result"] == E.AV_OK
    code, duration = ptt.get_voice_file_duration(str(paused))
    assert code == E.AV_OK and 1500 <= duration <= 1800  # 1.2 s + 0.5 s, the paused second left out


def test_cancel_recording_leaves_no_file_and_no_event(server: ThreadServer, clients: ClientMaker,
                                                      files: Path) -> None:
    alice = player(server, clients, "10001")
    mic = MemoryMic()
    use_mic(alice, mic)
    out = files / "cancelled.ogg"
    assert ptt_of(alice).start_recording(str(out)) == E.AV_OK
    mic.push(resample(clip(1.5), 16_000, 48_000))
    wait_for([alice], lambda: mic.buffered_samples < 960)
    assert ptt_of(alice).cancel_recording() == E.AV_OK
    alice.ctx.poll()
    assert not alice.events.of(RECORD) and list(files.iterdir()) == []
    assert not mic.is_open  # the recording opened the mic, and closed it


def test_volume_scales_what_is_recorded(server: ThreadServer, clients: ClientMaker, files: Path) -> None:
    alice = player(server, clients, "10001")
    ptt = ptt_of(alice)
    assert ptt.set_mic_volume(201) == E.AV_ERR_INVALID_ARGUMENT and ptt.set_mic_volume(-1) == E.AV_ERR_INVALID_ARGUMENT
    assert ptt.set_speaker_volume(True) == E.AV_ERR_INVALID_ARGUMENT
    assert ptt.set_mic_volume(50) == E.AV_OK and ptt.get_mic_volume() == 50
    assert ptt.set_speaker_volume(150) == E.AV_OK and ptt.get_speaker_volume() == 150
    half = files / "half.ogg"
    assert record(alice, half, 1.5)["result"] == E.AV_OK
    assert ptt.set_mic_volume(100) == E.AV_OK
    full = files / "full.ogg"
    assert record(alice, full, 1.5)["result"] == E.AV_OK
    rms = [float(np.sqrt((vf.decode_voice_file(p).astype(np.float64) ** 2).mean())) for p in (half, full)]
    assert 0.4 < rms[0] / rms[1] < 0.6


# --- recording codes (4097-4104) ----------------------------------------------------------------


@pytest.mark.public_surface
def test_recording_codes(server: ThreadServer, clients: ClientMaker, files: Path) -> None:
    """4097 empty path, 4101 missing folder or a folder as path, 4099 twice, 4104 without a recording,
    4100 nothing captured, 4103 too short."""
    alice = player(server, clients, "10001")
    ptt = ptt_of(alice)
    mic = MemoryMic()
    use_mic(alice, mic)
    assert ptt.start_recording("") == E.QAVPTTERROR_RECORDER_PARAM_NULL
    assert ptt.start_recording(str(files / "missing" / "m.ogg")) == E.QAVPTTERROR_RECORDER_OPENFILE_ERR
    assert ptt.start_recording(str(files)) == E.QAVPTTERROR_RECORDER_OPENFILE_ERR
    assert ptt.start_recording(42) == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    for call in (ptt.stop_recording, ptt.pause_recording, ptt.resume_recording, ptt.cancel_recording):
        assert call() == E.QAVPTTERROR_RECORDER_RECORD_NOT_START
    silent = files / "nothing.ogg"
    assert ptt.start_recording(str(silent)) == E.AV_OK
    assert ptt.start_recording(str(files / "again.ogg")) == E.QAVPTTERROR_RECORDER_RECORDING_ERR
    assert ptt.stop_recording() == E.AV_OK  # the memory mic captured nothing
    assert next_event(alice, RECORD) == {"result": E.QAVPTTERROR_RECORDER_NODATA_ERR, "file_path": str(silent)}
    short = files / "short.ogg"
    assert record(alice, short, 0.5) == {"result": E.QAVPTTERROR_RECORDER_AUDIO_TOO_SHORT, "file_path": str(short)}
    assert list(files.iterdir()) == []  # refused recordings leave no file


@pytest.mark.public_surface
def test_mic_that_cannot_open_is_4098_and_refused_by_the_system_4102(server: ThreadServer, clients: ClientMaker,
                                                                      files: Path) -> None:
    alice = player(server, clients, "10001")
    bob = player(server, clients, "10002")
    mic = MemoryMic()
    use_mic(alice, mic)
    use_mic(bob, mic)
    assert ptt_of(alice).start_recording(str(files / "a.ogg")) == E.AV_OK
    # The mic is another context's (1008): it cannot be opened.
    assert ptt_of(bob).start_recording(str(files / "b.ogg")) == E.QAVPTTERROR_RECORDER_INIT_ERROR
    assert ptt_of(alice).cancel_recording() == E.AV_OK
    damaged = files / "damaged.wav"
    damaged.write_bytes(b"RIFF" + bytes(100))
    use_mic(bob, FileMic(damaged))  # 7011: not audio
    assert ptt_of(bob).start_recording(str(files / "b.ogg")) == E.QAVPTTERROR_RECORDER_INIT_ERROR
    use_mic(bob, FileMic(files / "folder.wav"))
    (files / "folder.wav").mkdir()  # the system refuses to read it (7010), as a denied device
    assert ptt_of(bob).start_recording(str(files / "b.ogg")) == E.QAVPTTERROR_RECORDER_PERMISSION_MIC_ERR
    assert sorted(p.name for p in files.iterdir()) == ["damaged.wav", "folder.wav"]


def test_arguments_and_limits(server: ThreadServer, clients: ClientMaker) -> None:
    alice = player(server, clients, "10001")
    ptt = ptt_of(alice)
    for ms in (1000, 58001, 0, -5, 1.5e3, True):
        assert ptt.set_max_message_length(ms) == E.AV_ERR_INVALID_ARGUMENT, ms  # type: ignore[arg-type]
    assert ptt.set_max_message_length(1001) == E.AV_OK and ptt.set_max_message_length(58000) == E.AV_OK
    assert ptt.apply_ptt_auth_buffer(b"") == E.AV_ERR_INVALID_ARGUMENT
    assert ptt.apply_ptt_auth_buffer(None) == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert ptt.download_recorded_file(None, "x.ogg") == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]


def test_before_init_and_from_another_thread() -> None:
    from opengme.sdk import Context
    ptt = Context(closed_port_url(), portaudio=False).get_ptt()
    assert ptt.start_recording("x.ogg") == E.AV_ERR_CONTEXT_NOT_EXIST
    assert ptt.get_file_size("x.ogg") == (E.AV_ERR_CONTEXT_NOT_EXIST, 0)
    assert ptt.get_mic_level() == 0


# --- files (7010, 7011) -------------------------------------------------------------------------


def test_file_size_and_duration(server: ThreadServer, clients: ClientMaker, message: Path, files: Path) -> None:
    ptt = ptt_of(player(server, clients, "10001"))
    assert ptt.get_file_size(str(message)) == (E.AV_OK, message.stat().st_size)
    assert ptt.get_voice_file_duration(str(message)) == (E.AV_OK, 2000)
    missing = str(files / "missing.ogg")
    assert ptt.get_file_size(missing) == (E.AV_ERR_FILE_CANNOT_ACCESS, 0)
    assert ptt.get_voice_file_duration(missing) == (E.AV_ERR_FILE_CANNOT_ACCESS, 0)
    damaged = files / "damaged.ogg"
    data = bytearray(message.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a CRC no longer matches
    damaged.write_bytes(bytes(data))
    assert ptt.get_voice_file_duration(str(damaged)) == (E.AV_ERR_FILE_DAMAGED, 0)
    assert ptt.get_file_size("") == (E.AV_ERR_INVALID_ARGUMENT, 0)


# --- upload codes (8193-8200, 7005, 7012) ---------------------------------------------------------


def test_upload_codes(server: ThreadServer, clients: ClientMaker, message: Path, files: Path) -> None:
    """8200 no AuthBuffer, 8193 unreadable or refused file, 8194 another openid's AuthBuffer or a
    wrong key, 7012 voice messages off, 7005 arrears."""
    alice = clients(server.url, server.app, "10001", portaudio=False)
    assert upload(alice, message) == {"result": E.QAVPTTERROR_UPLOAD_APPINFO_UNSET, "file_path": str(message),
                                      "file_id": ""}
    ptt = ptt_of(alice)
    assert ptt.apply_ptt_auth_buffer(server.auth("", "10001")) == E.AV_OK
    assert upload(alice, files / "missing.ogg")["result"] == E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR
    assert upload(alice, "")["result"] == E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR
    wav = write_wav(files / "not-ogg.ogg", clip(1.0), 16_000)
    assert upload(alice, wav)["result"] == E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR  # the server parsed it
    assert ptt.apply_ptt_auth_buffer(server.auth("", "10002")) == E.AV_OK  # not the init openid
    assert upload(alice, message)["result"] == E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL
    from opengme.authbuffer import gen_auth_buffer
    wrong = gen_auth_buffer(server.app.app_id, "", "10001", "A" * 16)
    assert ptt.apply_ptt_auth_buffer(wrong) == E.AV_OK
    assert upload(alice, message)["result"] == E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL
    assert ptt.apply_ptt_auth_buffer(server.auth("", "10001")) == E.AV_OK
    for switch, code in (({"ptt": False}, E.AV_ERR_SERVICE_NOT_OPENED), ({"arrears": True}, E.AV_ERR_CHARGE_OVERDUE)):
        server.store.set(server.app.app_id, **switch)
        assert upload(alice, message)["result"] == code
        server.store.set(server.app.app_id, ptt=True, arrears=False)
    assert upload(alice, message)["result"] == E.AV_OK


@pytest.mark.public_surface
def test_upload_network_and_reply_codes(server: ThreadServer, clients: ClientMaker, message: Path,
                                        other_http: Callable[..., str]) -> None:
    """8195 no server answers, 8197 an empty reply, 8198 a reply that is not OpenGME's."""
    for url, code in ((closed_port_url(), E.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL),
                      (other_http(200, b""), E.QAVPTTERROR_UPLOAD_SYSTEM_INNER_ERROR),
                      (other_http(502, b""), E.QAVPTTERROR_UPLOAD_SYSTEM_INNER_ERROR),
                      (other_http(200, b"<html>Welcome to nginx</html>"), E.QAVPTTERROR_UPLOAD_RSP_DATA_DECODE_FAIL),
                      (other_http(502, b"<html>Bad gateway</html>"), E.QAVPTTERROR_UPLOAD_RSP_DATA_DECODE_FAIL)):
        client = player(server, clients, "10001", url=url)
        assert upload(client, message) == {"result": code, "file_path": str(message), "file_id": ""}, url
        client.ctx.uninit()


# --- download codes (12289-12297) ---------------------------------------------------------------


@pytest.fixture
def shared(server: ThreadServer, clients: ClientMaker, message: Path) -> tuple[SdkClient, str]:
    """(a second player, the file id of a message the first one uploaded)."""
    alice = player(server, clients, "10001")
    uploaded = upload(alice, message)
    assert uploaded["result"] == E.AV_OK
    return player(server, clients, "10002"), str(uploaded["file_id"])


@pytest.mark.public_surface
def test_download_codes(server: ThreadServer, clients: ClientMaker, shared: tuple[SdkClient, str], message: Path,
                        files: Path) -> None:
    """12297 no AuthBuffer, 12289 local file unwritable, 12290 signature refused, 12292 not on the
    server, 12293 a bad or expired link, 7012/7005; never half a file."""
    bob, file_id = shared
    carol = clients(server.url, server.app, "10003", portaudio=False)
    out = files / "got.ogg"
    assert download(carol, file_id, out) == {"result": E.QAVPTTERROR_DOWNLOAD_APPINFO_UNSET,
                                             "file_path": str(out), "file_id": file_id}
    assert download(bob, file_id, files / "missing" / "got.ogg")["result"] == E.QAVPTTERROR_DOWNLOAD_FILE_ACCESSERROR
    assert download(bob, file_id, files)["result"] == E.QAVPTTERROR_DOWNLOAD_FILE_ACCESSERROR
    assert download(bob, file_id, "")["result"] == E.QAVPTTERROR_DOWNLOAD_FILE_ACCESSERROR
    assert ptt_of(carol).apply_ptt_auth_buffer(server.auth("", "10001")) == E.AV_OK  # another openid's
    assert download(carol, file_id, out)["result"] == E.QAVPTTERROR_DOWNLOAD_SIGN_CHECK_FAIL
    unknown = file_id.rsplit("/", 1)[0] + "/" + "0" * 64
    assert download(bob, unknown, out)["result"] == E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR
    assert download(bob, "not a url", out)["result"] == E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR
    file_name = file_id.rsplit("/", 1)[1]
    expired = proto.signed_link(file_id, server.app.key, server.app.app_id, "10002", file_name, int(time.time()) - 1)
    assert download(carol, expired, out)["result"] == E.QAVPTTERROR_DOWNLOAD_GET_SIGN_NETWORK_FAIL
    valid = proto.signed_link(file_id, server.app.key, server.app.app_id, "10002", file_name, int(time.time()) + 60)
    assert download(carol, valid, out)["result"] == E.AV_OK  # a link needs no AuthBuffer
    assert out.read_bytes() == message.read_bytes()
    for switch, code in (({"ptt": False}, E.AV_ERR_SERVICE_NOT_OPENED), ({"arrears": True}, E.AV_ERR_CHARGE_OVERDUE)):
        server.store.set(server.app.app_id, **switch)
        assert download(bob, file_id, files / "switch.ogg")["result"] == code
        server.store.set(server.app.app_id, ptt=True, arrears=False)
    assert sorted(p.name for p in files.iterdir()) == ["got.ogg"]  # no partial or temporary file


@pytest.mark.public_surface
def test_download_network_and_reply_codes(server: ThreadServer, clients: ClientMaker, shared: tuple[SdkClient, str],
                                          message: Path, other_http: Callable[..., str],
                                          files: Path) -> None:
    """12291 no answer, 12294 an empty reply, 12295 a reply that is not OpenGME's or bytes that do
    not match the server's sha256."""
    bob, file_id = shared
    path = file_id[file_id.index(proto.FILES_PATH):]
    out = files / "got.ogg"
    assert download(bob, closed_port_url() + path, out)["result"] == E.QAVPTTERROR_DOWNLOAD_COS_INTERNAL_FAIL
    assert download(bob, other_http(200, b"") + path, out)["result"] == E.QAVPTTERROR_DOWNLOAD_SYSTEM_INNER_ERROR
    assert download(bob, other_http(404, b"<html>no</html>") + path, out)["result"] == \
        E.QAVPTTERROR_DOWNLOAD_GET_SIGN_RSP_DATA_DECODE_FAIL
    # Real Ogg bytes but no X-GME-Sha256 to check them against: not trusted.
    assert download(bob, other_http(200, message.read_bytes()) + path, out)["result"] == \
        E.QAVPTTERROR_DOWNLOAD_GET_SIGN_RSP_DATA_DECODE_FAIL
    assert not out.exists()
    assert download(bob, file_id, out)["result"] == E.AV_OK
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(message.read_bytes()).hexdigest()


# --- playback codes (20481-20485) ---------------------------------------------------------------


@pytest.mark.public_surface
def test_playback_codes(server: ThreadServer, clients: ClientMaker, message: Path, files: Path) -> None:
    """20483 empty path, 20484 unreadable or damaged file, 20482 while another plays, 20485 stop
    with nothing playing, 20481 no speaker; a voice_type outside 0..12 is 1004; stop still gives 5004."""
    alice = player(server, clients, "10001")
    ptt = ptt_of(alice)
    audio = alice.ctx.get_audio_ctrl()
    assert ptt.play_recorded_file(str(message)) == E.QAVPTTERROR_PLAYER_INIT_ERR  # no speaker at all
    assert audio.use_speaker_file(str(files / "heard.wav")) == E.AV_OK
    assert ptt.play_recorded_file("") == E.QAVPTTERROR_PLAYER_PARAM_NULL
    assert ptt.play_recorded_file(str(files / "missing.ogg")) == E.QAVPTTERROR_PLAYER_OPENFILE_ERR
    (files / "junk.ogg").write_bytes(b"OggS" + bytes(200))
    assert ptt.play_recorded_file(str(files / "junk.ogg")) == E.QAVPTTERROR_PLAYER_OPENFILE_ERR
    assert ptt.play_recorded_file(str(message), 13) == E.AV_ERR_INVALID_ARGUMENT  # GME 2.x has 0..12
    assert ptt.stop_play_file() == E.QAVPTTERROR_PLAYER_PLAYER_NOT_START_ERR
    assert ptt.play_recorded_file(str(message)) == E.AV_OK
    assert ptt.play_recorded_file(str(message)) == E.QAVPTTERROR_PLAYER_PLAYING_ERR
    assert ptt.stop_play_file() == E.AV_OK
    assert next_event(alice, PLAY) == {"result": E.AV_OK, "file_path": str(message)}
    assert ptt.stop_play_file() == E.QAVPTTERROR_PLAYER_PLAYER_NOT_START_ERR
    heard, _ = read_wav(files / "heard.wav")  # the speaker the playback opened closed again
    assert len(heard) < 48_000 * 2


def test_uninit_drops_a_recording_and_a_playback(server: ThreadServer, clients: ClientMaker, message: Path,
                                                files: Path) -> None:
    alice = player(server, clients, "10001")
    use_mic(alice, MemoryMic())
    assert alice.ctx.get_audio_ctrl().use_speaker_file(str(files / "heard.wav")) == E.AV_OK
    assert ptt_of(alice).start_recording(str(files / "m.ogg")) == E.AV_OK
    assert ptt_of(alice).play_recorded_file(str(message)) == E.AV_OK
    assert alice.ctx.uninit() == E.AV_OK
    assert [p.name for p in files.iterdir()] == ["heard.wav"]
    assert alice.ctx.init(server.app.app_id, "10001") == E.AV_OK
    assert ptt_of(alice).stop_recording() == E.QAVPTTERROR_RECORDER_RECORD_NOT_START
    assert upload(alice, message)["result"] == E.QAVPTTERROR_UPLOAD_APPINFO_UNSET  # the AuthBuffer went too


def test_recording_in_a_room_shares_the_rooms_mic(server: ThreadServer, clients: ClientMaker, files: Path) -> None:
    """In a FLUENCY room the mic runs at 16 kHz for the room; a recording taps it and leaves it open."""
    from support.sdk_harness import enter
    alice = player(server, clients, "10001")
    mic = MemoryMic()
    use_mic(alice, mic)
    enter(server, alice, "lobby")
    audio = alice.ctx.get_audio_ctrl()
    assert audio.enable_mic(True) == E.AV_OK
    out = files / "in-room.ogg"
    assert ptt_of(alice).start_recording(str(out)) == E.AV_OK
    mic.push(resample(clip(1.5), 16_000, mic.sample_rate))
    wait_for([alice], lambda: mic.buffered_samples < mic.frame_samples)
    assert ptt_of(alice).stop_recording() == E.AV_OK
    assert next_event(alice, RECORD)["result"] == E.AV_OK
    code, duration = ptt_of(alice).get_voice_file_duration(str(out))
    assert code == E.AV_OK and 1400 <= duration <= 1600
    assert mic.is_open and audio.is_audio_capture_device_enabled()  # the room's mic stays on


def test_transfers_never_block_the_callers_thread(server: ThreadServer, clients: ClientMaker, message: Path,
                                                  other_http: Callable[..., str], files: Path) -> None:
    """A server that takes 1.5 s to answer: the calls return at once, poll keeps running, the
    outcome arrives as an event."""
    slow = other_http(200, b"", delay=1.5)
    alice = player(server, clients, "10001", url=slow)
    started = time.monotonic()
    assert ptt_of(alice).upload_recorded_file(str(message)) == E.AV_OK
    assert ptt_of(alice).download_recorded_file(slow + proto.FILES_PATH + "/x", str(files / "x.ogg")) == E.AV_OK
    assert time.monotonic() - started < 0.2
    polls = 0

    def answered() -> bool:
        nonlocal polls
        polls += 1
        return bool(alice.events.of(UPLOAD)) and bool(alice.events.of(DOWNLOAD))

    wait_for([alice], answered, timeout=10)
    assert polls > 50  # poll ran all along (every 5 ms) while both waited 1.5 s
    assert alice.events.results(UPLOAD) == [E.QAVPTTERROR_UPLOAD_SYSTEM_INNER_ERROR]
    assert alice.events.results(DOWNLOAD) == [E.QAVPTTERROR_DOWNLOAD_SYSTEM_INNER_ERROR]


def test_a_recording_goes_on_after_leaving_the_room(server: ThreadServer, clients: ClientMaker, files: Path) -> None:
    """Leaving closes the room's devices; a recording that runs reopens its mic (at 48 kHz now)."""
    from support.sdk_harness import enter
    alice = player(server, clients, "10001")
    mic = MemoryMic()
    use_mic(alice, mic)
    enter(server, alice, "lobby")
    assert alice.ctx.get_audio_ctrl().enable_mic(True) == E.AV_OK
    out = files / "across.ogg"
    assert ptt_of(alice).start_recording(str(out)) == E.AV_OK
    mic.push(resample(clip(1.0), 16_000, mic.sample_rate))
    wait_for([alice], lambda: mic.buffered_samples < mic.frame_samples)
    assert alice.ctx.exit_room() == E.AV_OK
    wait_for([alice], lambda: bool(alice.events.of(EventType.EXIT_ROOM)) and mic.is_open and mic.sample_rate == 48_000)
    mic.push(resample(clip(1.0, 1.0), 16_000, 48_000))
    wait_for([alice], lambda: mic.buffered_samples < mic.frame_samples)
    assert ptt_of(alice).stop_recording() == E.AV_OK
    assert next_event(alice, RECORD)["result"] == E.AV_OK
    code, duration = ptt_of(alice).get_voice_file_duration(str(out))
    assert code == E.AV_OK and 1850 <= duration <= 2100
    assert not mic.is_open  # nothing else needs it outside the room
