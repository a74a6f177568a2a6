"""Package metadata: the SPDX license with its text, links and classifiers, as the installed build saw them."""
from __future__ import annotations

import importlib.metadata
import tomllib

from support.paths import REPO


def test_license_is_an_spdx_expression_with_its_text() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # a string: the table form is deprecated (setuptools warns)
    assert project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    # License classifiers are superseded by the expression (setuptools >= 77 refuses both).
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert "Typing :: Typed" in project["classifiers"]
    assert project["urls"]


def test_the_installed_metadata_carries_them() -> None:
    """`make` reinstalls when pyproject.toml changes, so this is what setuptools made of it."""
    meta = importlib.metadata.metadata("opengme")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert len(meta.get_all("Project-URL") or []) >= 1 and "Typing :: Typed" in (meta.get_all("Classifier") or [])
