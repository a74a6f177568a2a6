"""What the commands that drive the SDK (``join``, ``message``) share: turning a call's code into the
CLI's one-line error, and choosing a device from a ``--mic``/``--speaker`` value.

Imports nothing heavy: the SDK itself is loaded only when such a command runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from opengme.cli import CliError
from opengme.errors import ErrorCode

if TYPE_CHECKING:
    from opengme.sdk.audio_ctrl import AudioCtrl

DEFAULT_DEVICE = "default"
"""The ``--mic``/``--speaker`` value for the sound card's default device (GME's id "0")."""
POLL_S = 1 / 30  # GME's demo polls at 30 Hz


def failed(code: int, detail: str = "") -> CliError:
    """One line naming the GME code; the SDK's ``error_info`` usually starts with that name already."""
    try:
        name = ErrorCode(code).name
    except ValueError:
        name = "error"
    prefix = f"{name} ({int(code)})"
    if detail.startswith(prefix):
        return CliError(detail, 1)
    return CliError(f"{prefix}{': ' + detail if detail else ''}", 1)


def check(code: ErrorCode, what: str) -> None:
    """A call that did not succeed ends the command (7015, a warning in GME too, does not)."""
    if code not in (ErrorCode.AV_OK, ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE):
        raise failed(code, what)


def select_device(ctrl: AudioCtrl, choice: str, kind: str) -> None:
    """A file path registers a file device; 'default' keeps GME's "0" (the sound card's default)."""
    if choice == DEFAULT_DEVICE:
        return
    code = ctrl.use_mic_file(choice) if kind == "mic" else ctrl.use_speaker_file(choice)
    check(code, f"cannot use {choice} as the {kind}")
