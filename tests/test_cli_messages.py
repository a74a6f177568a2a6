"""``opengme messages …`` on the data directory of a running server that holds real uploads."""
from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.codec import voicefile as vf
from opengme.errors import ErrorCode
from opengme.protocol import ptt as proto
from opengme.store import App
from support.audio import clip
from support.processes import ServeProcess, opengme_cmd


def _run(served: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(opengme_cmd(*args, "--data-dir", str(served.data_dir)),
                          capture_output=True, text=True, timeout=20)


def _headers(app: App, open_id: str) -> dict[str, str]:
    return proto.auth_headers(app.app_id, open_id, gen_auth_buffer(app.app_id, "", open_id, app.key))


def _upload(served: ServeProcess, app: App, open_id: str, data: bytes) -> dict[str, object]:
    request = urllib.request.Request(served.url + proto.FILES_PATH, data=data, method="POST",
                                     headers=_headers(app, open_id))
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def test_list_show_delete(served: ServeProcess, tmp_path: Path) -> None:
    app = served.dev_app()
    voice = vf.encode_voice_file(tmp_path / "m.ogg", clip(2.0)).read_bytes()
    first = _upload(served, app, "10001", voice)
    second = _upload(served, app, "10002", voice)
    first_id = str(first["file_id"]).rsplit("/", 1)[1]
    listing = _run(served, "messages", "list", app.app_id)
    assert listing.returncode == 0, listing.stderr
    assert first_id in listing.stdout and "10002" in listing.stdout
    mine = json.loads(_run(served, "messages", "list", app.app_id, "--openid", "10001", "--json").stdout)
    assert [m["file_id"] for m in mine] == [first_id] and mine[0]["sha256"] == first["sha256"]
    shown = json.loads(_run(served, "messages", "show", str(first["file_id"])).stdout)  # the URL works too
    assert (shown["open_id"], shown["size"], shown["app_id"]) == ("10001", len(voice), app.app_id)
    assert shown["expires"] > shown["created"]
    deleted = _run(served, "messages", "delete", first_id)
    assert deleted.returncode == 0 and first_id in deleted.stdout
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(urllib.request.Request(str(first["file_id"]), headers=_headers(app, "10003")),
                               timeout=10)
    assert json.loads(gone.value.read())["code"] == ErrorCode.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR
    with urllib.request.urlopen(urllib.request.Request(str(second["file_id"]), headers=_headers(app, "10003")),
                                timeout=10) as resp:
        assert resp.read() == voice  # same bytes, stored once: the other message keeps them
    cleaned = _run(served, "messages", "clean")
    assert cleaned.returncode == 0 and "expired messages: 0" in cleaned.stdout


def test_errors_are_one_line(served: ServeProcess, tmp_path: Path) -> None:
    for args, status in ((("messages", "show", "A" * 24), 1), (("messages", "delete", "nope"), 1),
                         (("messages", "list"), 2), (("messages",), 2)):
        result = _run(served, *args)
        assert result.returncode == status, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, args
    missing = subprocess.run(opengme_cmd("messages", "list", "1400000000", "--data-dir", str(tmp_path / "none")),
                             capture_output=True, text=True, timeout=20)
    assert missing.returncode == 2 and "no data directory" in missing.stderr
