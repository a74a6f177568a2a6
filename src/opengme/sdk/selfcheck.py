"""GME's SDK self-check behind ``Init`` returning 7015 (AV_ERR_SDK_NOT_FULL_UPDATE).

GME's SDK compares MD5s of its own files and warns (Init still succeeds) when an upgrade replaced
only some of them. OpenGME checks the same thing in two real ways:

1. every SDK module carries ``SDK_STAMP``, which must equal ``opengme.__version__``: a module left
   over from another release is named;
2. when the imported package was installed from a wheel (or sdist), the installer's RECORD lists a
   hash per file: each file is hashed again, so an edited, replaced or missing file is named. An
   editable or source-tree install has no per-file hashes and skips this part, and installed
   metadata whose version differs from the code's is reported as well.
"""
from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
from functools import cache
from pathlib import Path

import opengme

SDK_STAMP = "0.1.0"
SDK_MODULES = ("audio_ctrl", "context", "media", "room", "selfcheck", "session", "transport")
DISTRIBUTION = "opengme"


@cache
def self_check() -> tuple[str, ...]:
    """What is wrong with this installation (empty when it is whole); computed once per process."""
    return (*_stamp_problems(), *_record_problems())


def _stamp_problems() -> list[str]:
    problems = []
    for name in SDK_MODULES:
        stamp = getattr(importlib.import_module(f"opengme.sdk.{name}"), "SDK_STAMP", None)
        if stamp != opengme.__version__:
            problems.append(f"opengme.sdk.{name} is from release {stamp}, the package is {opengme.__version__}")
    return problems


def _record_problems() -> list[str]:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return []  # run from a source tree: nothing was installed, so nothing can be half-installed
    problems = []
    if dist.version != opengme.__version__:
        problems.append(f"installed metadata says {dist.version}, the code says {opengme.__version__}")
    package = Path(opengme.__file__).resolve().parent
    hashed = [f for f in dist.files or () if f.hash is not None and f.parts[0] == DISTRIBUTION]
    if not hashed or Path(str(dist.locate_file(f"{DISTRIBUTION}/__init__.py"))).resolve().parent != package:
        return problems  # editable install, or the metadata belongs to another copy than the one imported
    for entry in hashed:
        path = Path(str(dist.locate_file(entry)))
        assert entry.hash is not None
        if not path.is_file():
            problems.append(f"{entry} is missing")
        elif file_hash(path, entry.hash.mode) != entry.hash.value:
            problems.append(f"{entry} differs from the installed release")
    return problems


def file_hash(path: Path, mode: str) -> str:
    """A file's digest in RECORD's form: urlsafe base64 without padding (PEP 376 / PEP 427)."""
    digest = hashlib.new(mode, path.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
