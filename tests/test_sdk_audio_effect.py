"""Voice changer, accompaniment and sound effects through the SDK (``ctx.get_audio_effect_ctrl()``)
against a real server: what the other member hears is measured (the fundamental of a pitched voice,
the band of an accompaniment tone), and every accompaniment/effect code in its situation."""
from __future__ import annotations

import hashlib
import wave
from pathlib import Path

import numpy as np
import pytest

from opengme.codec import voicefile as vf
from opengme.core.effects import VoiceType
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.sdk.audio_effect import AudioEffectCtrl
from support.audio import OUT_RATE, band, tone, write_wav
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, listen, talk, wait_for, wait_played

E = ErrorCode
F0 = 150.0


def voice(seconds: float, rate: int = OUT_RATE, f0: float = F0) -> np.ndarray:
    """A steady voiced sound: a 150 Hz fundamental with four falling harmonics."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    return (6000 * x / np.max(np.abs(x))).astype(np.int16)


def fundamental(samples: np.ndarray, rate: int = OUT_RATE) -> float:
    """F0 by autocorrelation (60–1000 Hz) with parabolic interpolation of the peak."""
    x = samples.astype(np.float64) - np.mean(samples)
    size = 2 * len(x)
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, size)) ** 2, size)[: len(x)]
    lo, hi = rate // 1000, rate // 60
    k = lo + int(np.argmax(ac[lo:hi]))
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    return rate / (k + 0.5 * (a - c) / (a - 2 * b + c))




def join(server: ThreadServer, clients: ClientMaker, open_ids: list[str],
         room_type: int = RoomType.STANDARD) -> list[SdkClient]:
    made = [clients(server.url, server.app, o, portaudio=False) for o in open_ids]
    for c in made:
        assert c.ctx.enter_room("fx", room_type, server.auth("fx", c.open_id)) == E.AV_OK
    wait_for(made, lambda: all(c.ctx.is_room_entered() for c in made))
    return made






def fx(client: SdkClient) -> AudioEffectCtrl:
    return client.ctx.get_audio_effect_ctrl()


# --- voice changer --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.public_surface
@pytest.mark.parametrize(("voice_type", "semitones"), [(VoiceType.LOLITA, 7), (VoiceType.UNCLE, -5)])
def test_listener_hears_the_fundamental_shifted(server: ThreadServer, clients: ClientMaker, tmp_path: Path,
                                                voice_type: VoiceType, semitones: int) -> None:
    """A talks a steady 150 Hz voice with a voice type on; B's recording (through Opus and the relay)
    has its fundamental where the type puts it, and A hears the same in its in-ear monitor."""
    a, b = join(server, clients, ["10001", "10002"])
    heard, monitor = listen(b), listen(a)
    assert fx(a).set_voice_type(voice_type) == E.AV_OK and fx(a).get_voice_type() == voice_type
    assert fx(a).enable_loop_back(True) == E.AV_OK
    talk(a, write_wav(tmp_path / "a.wav", voice(4.0)))
    wait_played([a, b], 2.5, heard, monitor)
    expected = F0 * 2 ** (semitones / 12)
    measured = fundamental(heard.take_all()[-OUT_RATE // 2:])
    own = fundamental(monitor.take_all()[-OUT_RATE // 2:])
    assert abs(measured / expected - 1) < 0.02, (measured, expected)
    assert abs(own / expected - 1) < 0.02, (own, expected)


@pytest.mark.public_surface
def test_voice_changer_arguments_and_room(server: ThreadServer, clients: ClientMaker) -> None:
    """1201 outside a room; 1004 for types outside GME 2.x's 0–12 / karaoke 0–8 / bad equalizer gains."""
    (a,) = [clients(server.url, server.app, "10001", portaudio=False)]
    assert fx(a).set_voice_type(1) == E.AV_ERR_ROOM_NOT_EXIST
    assert fx(a).start_accompany("x.wav") == E.AV_ERR_ROOM_NOT_EXIST
    assert fx(a).is_accompany_play_end() is True
    (a,) = join(server, clients, ["10002"])
    assert fx(a).set_voice_type(13) == E.AV_ERR_INVALID_ARGUMENT
    assert fx(a).set_voice_type(True) == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert fx(a).set_karaoke_type(9) == E.AV_ERR_INVALID_ARGUMENT
    assert fx(a).set_karaoke_type(5) == E.AV_OK
    assert fx(a).set_equalizer([0.0] * 9) == E.AV_ERR_INVALID_ARGUMENT
    assert fx(a).set_equalizer([13.0] + [0.0] * 9) == E.AV_ERR_INVALID_ARGUMENT
    assert fx(a).set_equalizer([3.0, -3.0, 0, 0, 0, 6, 0, 0, 0, 0]) == E.AV_OK
    assert fx(a).enable_loop_back(1) == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]


@pytest.mark.public_surface
def test_voice_message_plays_with_a_voice_type_and_the_file_stays(server: ThreadServer, clients: ClientMaker,
                                                                   tmp_path: Path) -> None:
    a = clients(server.url, server.app, "10001", portaudio=False)
    message = vf.encode_voice_file(tmp_path / "m.ogg", voice(2.0, 16_000))
    before = hashlib.sha256(message.read_bytes()).hexdigest()
    assert a.ctx.get_audio_ctrl().use_speaker_file(str(tmp_path / "heard.wav")) == E.AV_OK
    assert a.ctx.get_ptt().play_recorded_file(str(message), VoiceType.HUANG) == E.AV_OK
    wait_for([a], lambda: bool(a.events.of(EventType.PTT_PLAY_COMPLETE)), timeout=10)
    with wave.open(str(tmp_path / "heard.wav")) as w:
        heard = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    measured = fundamental(heard[OUT_RATE // 2: OUT_RATE])
    assert abs(measured / (2 * F0) - 1) < 0.02, measured  # an octave up
    assert hashlib.sha256(message.read_bytes()).hexdigest() == before


# --- accompaniment and effects ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.public_surface
def test_accompaniment_and_an_effect_are_heard_and_stop_where_asked(server: ThreadServer, clients: ClientMaker,
                                                                     tmp_path: Path) -> None:
    """A's mic captures silence; the accompaniment (1000 Hz) and a sound effect (2500 Hz) ride it to B
    and stop when asked; ACCOMPANY_FINISH says stopped (False) or played out (True)."""
    a, b = join(server, clients, ["10001", "10002"])
    heard = listen(b)
    mine = listen(a)
    song = write_wav(tmp_path / "song.wav", tone(1000, 20.0))
    talk(a, write_wav(tmp_path / "silence.wav", np.zeros(OUT_RATE * 30, np.int16)))
    ctrl = fx(a)
    assert ctrl.start_accompany(str(song), True, -1, 500) == E.AV_OK
    assert ctrl.is_accompany_play_end() is False
    assert ctrl.get_accompany_file_total_time_by_ms() == 20_000
    assert ctrl.play_effect(7, str(write_wav(tmp_path / "ding.wav", tone(2500, 5.0))), True) == E.AV_OK
    wait_played([a, b], 1.5, heard, mine)
    last = heard.take_all()[-OUT_RATE // 2:]
    assert band(last, 1000) > 1000 and band(last, 2500) > 1000
    assert band(mine.take_all()[-OUT_RATE // 2:], 1000) > 1000  # loop_back: A hears its accompaniment
    assert ctrl.get_accompany_file_current_played_time_by_ms() >= 1500
    assert ctrl.set_accompany_file_current_played_time_by_ms(10_000) == E.AV_OK
    assert ctrl.get_accompany_file_current_played_time_by_ms() == 10_000
    assert ctrl.stop_effect(7) == E.AV_OK and ctrl.stop_effect(7) == E.QAV_ERR_EFFECT_STATE_ILLIGAL
    assert ctrl.stop_accompany() == E.AV_OK
    wait_for([a, b], lambda: bool(a.events.of(EventType.ACCOMPANY_FINISH)))
    assert a.events.of(EventType.ACCOMPANY_FINISH) == [{"result": 0, "file_path": str(song), "is_finished": False}]
    assert ctrl.is_accompany_play_end() is True
    heard.take_all()
    wait_played([a, b], 1.0, heard)
    quiet = heard.take_all()[-OUT_RATE // 2:]
    assert band(quiet, 1000) < 100 and band(quiet, 2500) < 100  # stopped: B hears neither any more
    short = write_wav(tmp_path / "short.wav", tone(1000, 0.3))
    assert ctrl.start_accompany(str(short), False, 2) == E.AV_OK  # plays twice, 0.6 s
    wait_for([a, b], lambda: len(a.events.of(EventType.ACCOMPANY_FINISH)) == 2, timeout=5)
    assert a.events.of(EventType.ACCOMPANY_FINISH)[-1]["is_finished"] is True


@pytest.mark.public_surface
def test_accompaniment_and_effect_codes(server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    """4001/4051 cannot open, 4002/4052 not audio, 4003/4053 no audio in it, 4004/4054 bad
    arguments, 4007/4057 nothing in that state."""
    (a,) = join(server, clients, ["10001"])
    ctrl = fx(a)
    missing = str(tmp_path / "missing.mp3")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00not audio at all" * 64)
    empty = str(write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16)))
    good = str(write_wav(tmp_path / "good.wav", tone(440, 1.0)))
    assert ctrl.start_accompany(missing) == E.QAV_ERR_ACC_OPENFILE_FAILED
    assert ctrl.start_accompany(str(junk)) == E.QAV_ERR_ACC_FILE_FORAMT_NOTSUPPORT
    assert ctrl.start_accompany(empty) == E.QAV_ERR_ACC_DECODER_FAILED
    assert ctrl.start_accompany(good, True, -2) == E.QAV_ERR_ACC_BAD_PARAM
    assert ctrl.start_accompany("") == E.QAV_ERR_ACC_BAD_PARAM
    assert ctrl.set_accompany_volume(201) == E.QAV_ERR_ACC_BAD_PARAM
    assert ctrl.stop_accompany() == E.QAV_ERR_ACC_STATE_ILLIGAL
    assert ctrl.pause_accompany() == E.QAV_ERR_ACC_STATE_ILLIGAL
    assert ctrl.set_accompany_key(2) == E.QAV_ERR_ACC_STATE_ILLIGAL
    assert ctrl.start_accompany(good) == E.AV_OK
    assert ctrl.pause_accompany() == E.AV_OK and ctrl.pause_accompany() == E.QAV_ERR_ACC_STATE_ILLIGAL
    assert ctrl.resume_accompany() == E.AV_OK and ctrl.resume_accompany() == E.QAV_ERR_ACC_STATE_ILLIGAL
    assert ctrl.set_accompany_key(13) == E.QAV_ERR_ACC_BAD_PARAM and ctrl.set_accompany_key(-4) == E.AV_OK
    assert ctrl.set_accompany_volume(150) == E.AV_OK and ctrl.get_accompany_volume() == 150
    assert ctrl.enable_accompany_play(False) == E.AV_OK and ctrl.enable_accompany_loop_back(True) == E.AV_OK
    assert ctrl.play_effect(1, missing) == E.QAV_ERR_EFFECT_OPENFILE_FAILED
    assert ctrl.play_effect(1, str(junk)) == E.QAV_ERR_EFFECT_FILE_FORAMT_NOTSUPPORT
    assert ctrl.play_effect(1, empty) == E.QAV_ERR_EFFECT_DECODER_FAILED
    assert ctrl.play_effect(1, good, pitch=3.0) == E.QAV_ERR_EFFECT_BAD_PARAM
    assert ctrl.play_effect(-1, good) == E.QAV_ERR_EFFECT_BAD_PARAM
    assert ctrl.set_effects_volume(-1) == E.QAV_ERR_EFFECT_BAD_PARAM
    assert ctrl.pause_effect(1) == E.QAV_ERR_EFFECT_STATE_ILLIGAL
    assert ctrl.play_effect(1, good, False, 1.5, -0.5, 2.0) == E.AV_OK
    assert ctrl.pause_effect(1) == E.AV_OK and ctrl.resume_effect(1) == E.AV_OK
    assert ctrl.pause_all_effects() == E.AV_OK and ctrl.resume_all_effects() == E.AV_OK
    assert ctrl.set_effects_volume(50) == E.AV_OK and ctrl.get_effects_volume() == 50
    assert ctrl.stop_all_effects() == E.AV_OK and ctrl.stop_effect(1) == E.QAV_ERR_EFFECT_STATE_ILLIGAL
    assert a.ctx.exit_room() == E.AV_OK
    wait_for([a], lambda: not a.ctx.is_room_entered())
    assert ctrl.is_accompany_play_end() is True
