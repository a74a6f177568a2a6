"""The package ships ``py.typed``: a user's type checker sees the real public API, and the CLI starts
without importing the SDK's network stack."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

USER_CODE = '''\
from typing import Any

from opengme import Context, ErrorCode, EventType, GmeError, Room, RoomType


def on_event(event: EventType, data: dict[str, Any]) -> None:
    print(event.name, data)


ctx = Context("http://127.0.0.1:8090")
ctx.set_delegate(on_event)
code: ErrorCode = ctx.init("1400000000", "10001")
ctx.enter_room("lobby", RoomType.FLUENCY, b"")
room: Room = ctx.get_room()
error = GmeError(ErrorCode.AV_ERR_AUTH_FIALD, "detail")
'''


@pytest.mark.slow
def test_mypy_sees_the_public_api(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(USER_CODE)
    (tmp_path / "typo.py").write_text(USER_CODE + 'ctx.enter_roomm("lobby", RoomType.FLUENCY, b"")\n')
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
         "good.py", "typo.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    line = USER_CODE.count("\n") + 1
    assert result.stdout.splitlines() == [
        f'typo.py:{line}: error: "Context" has no attribute "enter_roomm"; maybe "enter_room"?  [attr-defined]']


def test_the_cli_starts_without_the_sdk() -> None:
    probe = ("import sys, opengme, opengme.cli; opengme.cli.build_parser(); "
             "print(sorted(m for m in ('aiohttp', 'av', 'numpy', 'opengme.sdk', 'opengme.server') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_lazy_names_resolve_at_run_time() -> None:
    import opengme
    from opengme.errors import GmeError
    from opengme.sdk import Context

    assert opengme.Context is Context and opengme.GmeError is GmeError
    with pytest.raises(AttributeError, match="no attribute 'Contex'"):
        _ = opengme.Contex  # type: ignore[attr-defined]
