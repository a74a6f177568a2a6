"""GME's SDK self-check behind ``Init`` returning 7015 (AV_ERR_SDK_NOT_FULL_UPDATE).

GME's SDK compares MD5s of its own files and warns (Init still succeeds) when an upgrade replaced
only some of them. OpenGME checks the same thing with what the installer already wrote: when the
imported package was installed from a wheel (or sdist), its RECORD lists a hash per file, and each
file is hashed again, so a module left over from another release, an edited or a missing file is
named. The installed metadata must also carry ``opengme.__version__``, the package's one version.
An editable or source-tree install has no per-file hashes and has nothing to compare.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from functools import cache
from pathlib import Path

import opengme

DISTRIBUTION = "opengme"


@cache
def self_check() -> tuple[str, ...]:
    """What is wrong with this installation (empty when it is whole); computed once per process."""
    found = installed()
    return () if found is None else tuple(installation_problems(*found))


def installed() -> tuple[importlib.metadata.Distribution, Path] | None:
    """The installed distribution and the directory of the package imported; None from a source
    tree (nothing was installed, so nothing can be half-installed)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return dist, Path(opengme.__file__).resolve().parent


def installation_problems(dist: importlib.metadata.Distribution, package: Path) -> list[str]:
    """How the files of ``package`` (the directory imported) differ from what ``dist`` installed."""
    problems = []
    if dist.version != opengme.__version__:
        problems.append(f"installed metadata says {dist.version}, the code says {opengme.__version__}")
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
