"""The browser room client and the web console in a real Chromium (Debian's, driven by Playwright),
against a real server on 127.0.0.1, beside a native SDK member with a file microphone.

What is heard is compared with what was said by the envelope of the speech (log energy per 20 ms):
the browser's microphone is Chromium's fake device playing the speech clip in a loop, the native
member's is the same clip from a file; each side records what it plays. Screenshots of the demo page
and the console (wide and phone-sized) are written to ``test-output/browser/`` (git ignores it;
``SCREENSHOT_DIR`` names another folder) and are part of the test output: look at them.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opengme.devices import MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.server import console
from support.audio import OUT_RATE, speech
from support.browser import chromium, envelope, looped_envelope_correlation, recording
from support.paths import SPEECH_WAV
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, enter

MIN_ENVELOPE_CORRELATION = 0.75
"""Measured here (support.browser.looped_envelope_correlation): 0.94–0.99 both ways, idle or beside five
other test suites; the same clip with a 60 ms gap every 2 s scores 0.95. Unrelated speech (the LibriVox
clips of tests/data) scores 0.36–0.52 against it, white noise 0.23."""

pytestmark = pytest.mark.slow
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).parents[1] / "test-output" / "browser"))


@pytest.fixture
def output_dir() -> Path:
    folder = SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium(SPEECH_WAV) as context:
        yield context


def pump(clients: list[SdkClient], page: Any, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll the native clients and let the page run until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        for c in clients:
            c.ctx.poll()
        page.wait_for_timeout(50)


def open_demo(browser: Any, server: ThreadServer, open_id: str, room: str) -> Any:
    page = browser.new_page()
    page.on("console", lambda m: print(f"[{open_id} console] {m.text}"))  # shown when a test fails
    page.on("pageerror", lambda e: print(f"[{open_id} error] {e}"))
    page.on("response", lambda r: r.status >= 400 and print(f"[{open_id} HTTP {r.status}] {r.url}"))
    page.goto(f"{server.url}/demo?app={server.app.app_id}&openid={open_id}&room={room}")
    page.click("#enter")
    try:
        page.wait_for_function("() => window.demo.gme.isRoomEntered()", timeout=15_000)
    finally:
        print(f"[{open_id} status] {page.text_content('#status')}")
    page.check("#mic")
    return page


def events_of(page: Any, event: EventType) -> list[list[Any]]:
    """The page delegate's (type, data) pairs of one event type."""
    return list(page.evaluate("(t) => window.demo.events.filter(([e]) => e === t)", int(event)))


def members_on_page(page: Any) -> list[str]:
    return list(page.evaluate("() => window.demo.gme.getRoomMembers()"))


def bot(server: ThreadServer, clients: ClientMaker, room: str) -> tuple[SdkClient, MemorySpeaker]:
    """A native member speaking the clip from a file and recording what it hears."""
    client = clients(server.url, server.app, "20001", portaudio=False)
    enter(server, client, room, RoomType.FLUENCY)
    ctrl = client.ctx.get_audio_ctrl()
    heard = MemorySpeaker()
    assert ctrl.register_speaker(heard) == ErrorCode.AV_OK and ctrl.select_speaker(heard.id) == ErrorCode.AV_OK
    assert ctrl.enable_speaker(True) == ErrorCode.AV_OK
    assert ctrl.use_mic_file(SPEECH_WAV, loop=True) == ErrorCode.AV_OK and ctrl.enable_mic(True) == ErrorCode.AV_OK
    return client, heard


def test_a_browser_and_a_native_member_hear_each_other(
        server: ThreadServer, clients: ClientMaker, browser: Any, output_dir: Path) -> None:
    server.store.set(server.app.app_id, dev_signing=True)
    native, heard = bot(server, clients, "mixed")
    page = open_demo(browser, server, "30001", "mixed")
    # Both listed on each side.
    pump([native], page, lambda: sorted(native.ctx.get_room().get_members()) == ["20001", "30001"])
    pump([native], page, lambda: sorted(members_on_page(page)) == ["20001", "30001"])
    # The native member's voice moves the page's level meter and speaking indicator.
    pump([native], page, lambda: page.get_attribute('li[data-openid="20001"]', "data-speaking") == "yes")
    pump([native], page, lambda: page.evaluate("() => window.demo.gme.getRecvStreamLevel('20001')") > 20)
    pump([native], page, lambda: any(v.get("20001", 0) > 20 for _, v in events_of(page, EventType.USER_VOLUMES)))
    # The page hears the native member: its playback follows the clip.
    page.evaluate("() => window.demo.gme.recordPlayback(true)")
    heard.take_all()
    pump([native], page, lambda: page.evaluate(
        "() => window.demo.gme.recorded.reduce((n, p) => n + p.length, 0)") >= 6 * OUT_RATE, timeout=30)
    in_browser = recording(page)
    said = envelope(speech(OUT_RATE), OUT_RATE)
    browser_score = looped_envelope_correlation(said, envelope(in_browser, OUT_RATE))
    # The native member hears the browser: its speaker follows the clip the fake microphone plays.
    target = heard.frames_written + 300  # 6 s more of the browser's voice
    pump([native], page, lambda: heard.frames_written >= target)
    native_pcm = heard.take_all()
    native_score = looped_envelope_correlation(said, envelope(native_pcm[-6 * OUT_RATE:], OUT_RATE))
    # The local blacklist silences the member here while its level still shows; removing it brings it back.
    assert page.evaluate("() => window.demo.gme.addAudioBlackList('20001')") == ErrorCode.AV_OK
    page.wait_for_timeout(300)  # what was queued before plays out
    page.evaluate("() => window.demo.gme.takeRecording()")
    page.wait_for_timeout(1000)
    blacklisted = recording(page)
    pump([native], page, lambda: page.evaluate("() => window.demo.gme.getRecvStreamLevel('20001')") > 0)
    assert page.evaluate("() => window.demo.gme.removeAudioBlackList('20001')") == ErrorCode.AV_OK
    page.wait_for_timeout(1000)
    page.evaluate("() => window.demo.gme.takeRecording()")
    page.wait_for_timeout(1000)
    restored = recording(page)
    page.screenshot(path=str(output_dir / "demo.png"), full_page=True)
    assert len(blacklisted) > OUT_RATE // 2 and np.max(np.abs(blacklisted)) == 0, "a blacklisted member was played"
    assert np.sqrt(np.mean(restored.astype(np.float64) ** 2)) > 300, "the member stayed silent after the blacklist"
    assert np.sqrt(np.mean(in_browser.astype(np.float64) ** 2)) > 300, "the page played silence"
    assert browser_score >= MIN_ENVELOPE_CORRELATION, f"browser heard the native member with envelope r={browser_score:.2f}"
    assert native_score >= MIN_ENVELOPE_CORRELATION, f"native member heard the browser with envelope r={native_score:.2f}"
    print(f"envelope correlation: browser hears native {browser_score:.2f}, native hears browser {native_score:.2f}")


def test_the_console_shows_a_browser_member_speaking_and_kicks_it(
        server: ThreadServer, clients: ClientMaker, browser: Any, output_dir: Path) -> None:
    server.store.set(server.app.app_id, dev_signing=True)
    native, _ = bot(server, clients, "lobby")
    page = open_demo(browser, server, "30002", "lobby")
    ops = browser.new_page()
    ops.goto(f"{server.url}/console")
    token = console.get(server.server).first_token
    assert token is not None
    ops.fill("#token", token)
    ops.click("#login button[type=submit]")
    ops.wait_for_selector("#apps-table tbody tr")
    # Changes from the page itself carry its CSRF token: create an app (key shown once), flip a switch.
    ops.fill("#app-name", "racing")
    ops.click("#create-app button")
    ops.wait_for_selector("#key-once:not([hidden])")
    assert "shown once" in ops.text_content("#key-once")
    created = next(a for a in server.store.list() if a.name == "racing")
    assert created.key in ops.text_content("#key-once")
    ops.click(f'input[data-app="{created.app_id}"][data-switch="arrears"]')
    pump([native], page, lambda: server.store.require(created.app_id).arrears)
    speaking = 'article[data-room="lobby"] li[data-openid="30002"][data-speaking="yes"]'
    pump([native], page, lambda: ops.query_selector(speaking) is not None)
    ops.evaluate("() => document.querySelector('#rooms').scrollIntoView()")
    ops.screenshot(path=str(output_dir / "console.png"))  # the live rooms: docs/console.png is one of these
    ops.set_viewport_size({"width": 390, "height": 844})
    ops.screenshot(path=str(output_dir / "console-phone.png"), full_page=True)
    # From the signed-in page: a change without its session cookie, or with a wrong CSRF token, is refused.
    kick = json.dumps({"app_id": server.app.app_id, "room_id": "lobby", "open_id": "30002"})
    post = """async ([body, csrf, credentials]) => {
        const r = await fetch("/console/api/kick", {method: "POST", body, credentials,
            headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}});
        return [r.status, (await r.json()).code]; }"""
    refused = [ErrorCode.AV_ERR_SERVER_NO_PERMISSION]
    assert ops.evaluate(post, [kick, "wrong", "same-origin"]) == [403, *refused]
    assert ops.evaluate(post, [kick, "", "omit"]) == [401, *refused]
    # Another origin (localhost is another site than 127.0.0.1): the browser sends no cookie, the server
    # refuses the Origin, and the member stays.
    evil = browser.new_page()
    evil.goto(server.url.replace("127.0.0.1", "localhost") + "/healthz")
    evil.evaluate("""async ([url, body]) => { await fetch(url, {method: "POST", body, mode: "no-cors",
        credentials: "include"}); }""", [server.url + "/console/api/kick", kick])
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.demo.gme.isRoomEntered()")
    ops.click('article[data-room="lobby"] li[data-openid="30002"] button.danger')
    pump([native], page, lambda: not page.evaluate("() => window.demo.gme.isRoomEntered()"))
    removed = events_of(page, EventType.ROOM_DISCONNECT)
    assert removed and removed[-1][1]["result"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION
    assert "operator" in removed[-1][1]["error_info"]
    assert "Removed from the room" in page.text_content("#status")
    pump([native], page, lambda: native.ctx.get_room().get_members() == ["20001"])
    ops.wait_for_selector('article[data-room="lobby"] li[data-openid="30002"]', state="detached")


def readme_lines(base_url: str) -> str:
    """The README's three lines for a web game, with the static import made a dynamic one (a page
    script can only be evaluated as a function) and the server URL made this test server's."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = text.split("```js\n", 1)[1].split("```", 1)[0]
    first, rest = block.split("\n", 1)
    names, url = re.fullmatch(r'import \{ (.+) \} from "(.+)";', first).groups()  # type: ignore[union-attr]
    return f"const {{ {names} }} = await import({url!r});\n{rest}".replace("http://127.0.0.1:8090", base_url)


def test_the_readme_lines_put_a_web_page_in_a_room(
        server: ThreadServer, clients: ClientMaker, browser: Any) -> None:
    native, heard = bot(server, clients, "room1")
    page = browser.new_page()
    page.goto(f"{server.url}/healthz")  # any page of the server's origin: a secure context on 127.0.0.1
    auth = base64.b64encode(server.auth("room1", "30003")).decode()
    page.evaluate(f"async ([APPID, openId, authBufferBase64]) => {{ {readme_lines(server.url)}\nwindow.gme = gme; }}",
                  [server.app.app_id, "30003", auth])
    pump([native], page, lambda: page.evaluate("() => gme.getMicState() === 1 && gme.getSpeakerState() === 1"))
    assert page.evaluate("() => gme.EnterRoom === gme.enterRoom && gme.SetMicVolume(300)") == ErrorCode.AV_ERR_INVALID_ARGUMENT
    pump([native], page, lambda: sorted(native.ctx.get_room().get_members()) == ["20001", "30003"])
    heard.take_all()
    target = heard.frames_written + 100
    pump([native], page, lambda: heard.frames_written >= target)
    assert np.sqrt(np.mean(heard.take_all()[-OUT_RATE:].astype(np.float64) ** 2)) > 300  # the page's voice


def test_sdk_calls_answer_with_gme_codes(server: ThreadServer, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{server.url}/healthz")
    codes = page.evaluate("""async () => {
        const { OpenGME } = await import("/sdk/opengme.js");
        const gme = new OpenGME();
        return [gme.enterRoom("r", 1, "AAAA"), gme.init("", "1"), gme.init("1400000000", "10001"),
                gme.init("1400000000", "10001"), gme.enterRoom("r", 9, "AAAA"), gme.enterRoom("", 1, "AAAA"),
                gme.enableMic(true), gme.exitRoom(), gme.setSpeakerVolumeByOpenID("10002", 201),
                gme.addAudioBlackList("10002"), gme.addAudioBlackList("10002"), gme.removeAudioBlackList("10003"),
                gme.setTMGDelegate(null)];
    }""")
    assert codes == [ErrorCode.AV_ERR_CONTEXT_NOT_EXIST, ErrorCode.AV_ERR_INVALID_ARGUMENT, ErrorCode.AV_OK,
                     ErrorCode.AV_ERR_HAS_IN_THE_STATE, ErrorCode.AV_ERR_INVALID_ARGUMENT,
                     ErrorCode.AV_ERR_INVALID_ARGUMENT, ErrorCode.AV_ERR_ROOM_NOT_EXIST, ErrorCode.AV_ERR_ROOM_NOT_EXIST,
                     ErrorCode.AV_ERR_INVALID_ARGUMENT, ErrorCode.AV_OK, ErrorCode.AV_ERR_HAS_IN_THE_STATE,
                     ErrorCode.AV_ERR_INVALID_ARGUMENT, ErrorCode.AV_ERR_INVALID_ARGUMENT]


def test_a_refused_entry_reaches_the_delegate_with_the_servers_code(server: ThreadServer, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{server.url}/healthz")
    forged = base64.b64encode(b"\x00" * 64).decode()
    event = page.evaluate("""async ([app, auth]) => {
        const { OpenGME, EventType } = await import("/sdk/opengme.js");
        const gme = new OpenGME();
        gme.init(app, "10001");
        const entered = new Promise((resolve) => gme.setTMGDelegate((type, data) => {
            if (type === EventType.ENTER_ROOM) resolve(data); }));
        gme.enterRoom("r", 1, auth);
        return [await entered, gme.isRoomEntered()];
    }""", [server.app.app_id, forged])
    assert event[0]["result"] == ErrorCode.AV_ERR_AUTH_FIALD and event[0]["error_info"] and event[1] is False
