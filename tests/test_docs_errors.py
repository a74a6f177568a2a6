"""docs/errors.md stays true: one row per GME code, each raised code names the GME source its
situation follows, cited tests exist and assert that code and at least one of them goes through a
public surface, and the page's "raised or not" agrees with the source. Parses the page's tables and
the tests' source; no server, no network."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache

import pytest

from opengme.errors import Category, ErrorCode, info
from support.paths import REPO

DOC = REPO / "docs" / "errors.md"
SOURCE = REPO / "src" / "opengme"

SECTIONS = {
    "General": Category.GENERAL,
    "Voice chat: client": Category.VOICE_CHAT_CLIENT,
    "Voice chat: server": Category.VOICE_CHAT_SERVER,
    "Voice messages and speech-to-text": Category.PTT_STT,
    "Accompaniment and sound effects": Category.AUDIO_EFFECTS,
}
# How a "When OpenGME raises it" cell begins when OpenGME does not raise the code (yet).
LATER = ("*Later issue: voice messages.*", "*Later issue: speech-to-text.*", "*Later issue: 3D voice.*")
NOT_RAISED = "*Not raised.*"
IN_PROGRESS = "*Real-time voice issue (in progress).*"
# The GME sources a raised row may follow (the page's legend), or OpenGME's own choice.
SOURCES = frozenset({"error table", "EnterRoom table", "API reference", "AVSDK"})
SOURCE_TAG = re.compile(r"^\*GME: ([^*]+)\.\*")
CHOICE = "*OpenGME's choice"
DEFAULT_SOURCE = {"Voice messages and speech-to-text": "error table"}  # the legend says so for this section
# A test marked public_surface drives the SDK, a server socket, the CLI or a Python API. These files
# test pure cores below those surfaces, so none of their tests may carry the mark.
PUBLIC_SURFACE = "public_surface"
PURE_CORE_TESTS = frozenset({"tests/test_sdk_session.py", "tests/test_rooms_core.py", "tests/test_signalling_core.py",
                             "tests/test_signalling_protocol.py", "tests/test_media_session.py"})
NODE_ID = re.compile(r"tests/[\w/]+\.py::[\w:]+(?:\[[^\]`]*\])?")
ROW = re.compile(r"^\|\s*(\d+)\s*\|")
CODES = [code for code in ErrorCode if code is not ErrorCode.AV_OK]  # one per value: aliases fold


@dataclass(frozen=True)
class Row:
    value: int
    name: str
    meaning: str
    when: str
    tests: tuple[str, ...]
    section: str
    line: int

    @property
    def raised(self) -> bool:
        return not self.when.startswith((*LATER, NOT_RAISED, IN_PROGRESS))


@cache
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


@cache
def rows() -> tuple[Row, ...]:
    """Every table row whose first cell is a number, with the ``## `` section it sits in."""
    found: list[Row] = []
    section = ""
    for number, line in enumerate(doc_text().splitlines(), 1):
        if line.startswith("## "):
            section = line[3:].strip()
        elif ROW.match(line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == 5, f"docs/errors.md:{number}: expected 5 cells, got {len(cells)}"
            value, name, meaning, when, tests = cells
            found.append(Row(int(value), name, meaning, when, tuple(NODE_ID.findall(tests)), section, number))
    return tuple(found)


def row_of(code: ErrorCode) -> Row:
    found = [r for r in rows() if r.value == code]
    assert len(found) == 1, f"docs/errors.md has {len(found)} rows for {code.name} ({int(code)})"
    return found[0]


@cache
def cited_function(node_id: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The test a node id names (``file::test`` or ``file::Class::test``; parameters ignored)."""
    path, *names = node_id.split("[")[0].split("::")
    file = REPO / path
    if not file.is_file():
        return None
    scope: list[ast.stmt] = ast.parse(file.read_text(encoding="utf-8")).body
    *classes, function = names
    for class_name in classes:
        found = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == class_name]
        if not found:
            return None
        scope = found[0].body
    return next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function),
                None)


@cache
def module_aliases(path: str) -> dict[str, int]:
    """Module-level constants bound to a code (``INVALID = ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT``)."""
    aliases: dict[str, int] = {}
    for node in ast.parse((REPO / path).read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "ErrorCode"
                and node.value.attr in ErrorCode.__members__):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    aliases[target.id] = int(ErrorCode[node.value.attr])
    return aliases


def mentions(node_id: str, code: ErrorCode) -> bool:
    """Whether the test's decorators or body (not its name) name the code, an alias of it, or its
    value as a bare number (a quoted "10001" is an openid, not a code)."""
    function = cited_function(node_id)
    assert function is not None
    path = node_id.split("::")[0]
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    first = min([function.body[0].lineno, *(d.lineno for d in function.decorator_list)])
    text = "\n".join(lines[first - 1:function.end_lineno])
    if function.decorator_list:  # the def line sits between decorators and body: leave its name out
        text = text.replace(f"def {function.name}(", "def (")
    names = [n for n, member in ErrorCode.__members__.items() if member is code]
    names += [alias for alias, value in module_aliases(path).items() if value == code]
    return (any(re.search(rf"\b{name}\b", text) for name in names)
            or re.search(rf"(?<![\d\"'.]){int(code)}(?![\d\"'.])", text) is not None)


def marks(node_id: str) -> set[str]:
    """The ``pytest.mark.NAME`` decorators of a cited test (``@pytest.mark.slow`` or ``…slow(…)``)."""
    function = cited_function(node_id)
    assert function is not None
    found = set()
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
                and target.value.attr == "mark"):
            found.add(target.attr)
    return found


def sources(row: Row) -> set[str] | None:
    """The GME sources a raised row names; empty for OpenGME's choice, None when it names neither."""
    if row.when.startswith(CHOICE):
        return set()
    tag = SOURCE_TAG.match(row.when)
    if tag is not None:
        return {s.strip() for s in tag.group(1).split(",")}
    return {DEFAULT_SOURCE[row.section]} if row.section in DEFAULT_SOURCE else None


@cache
def raised_in_source() -> frozenset[int]:
    """Codes the package refers to outside the registry itself (raised, returned or sent)."""
    values: set[int] = set()
    for file in SOURCE.rglob("*.py"):
        if file == SOURCE / "errors.py":
            continue
        for name in re.findall(r"\bErrorCode\.(\w+)", file.read_text(encoding="utf-8")):
            if name in ErrorCode.__members__:
                values.add(int(ErrorCode[name]))
    values.discard(int(ErrorCode.AV_OK))
    return frozenset(values)


# --- one row per code ------------------------------------------------------------------------------


def test_every_code_has_exactly_one_row() -> None:
    values = [r.value for r in rows()]
    duplicates = sorted({v for v in values if values.count(v) > 1})
    assert duplicates == [], f"codes with more than one row: {duplicates}"
    assert sorted(values) == sorted(int(c) for c in CODES)
    assert len(values) == len(CODES) == 99


@pytest.mark.parametrize("code", CODES, ids=lambda c: str(int(c)))
def test_row_names_the_code_as_gme_does_in_its_category(code: ErrorCode) -> None:
    row = row_of(code)
    assert row.name == info(code).name, f"docs/errors.md:{row.line}"
    assert SECTIONS.get(row.section) is info(code).category, f"docs/errors.md:{row.line} is under {row.section!r}"
    assert row.meaning and row.when, f"docs/errors.md:{row.line} has an empty cell"


# --- cited tests -----------------------------------------------------------------------------------


def test_every_cited_test_exists() -> None:
    cited = sorted(set(NODE_ID.findall(doc_text())))
    assert cited, "the page cites no tests at all"
    missing = [node_id for node_id in cited if cited_function(node_id) is None]
    assert missing == [], f"docs/errors.md cites tests that do not exist: {missing}"


@pytest.mark.parametrize("code", CODES, ids=lambda c: str(int(c)))
def test_raised_codes_cite_tests_and_the_others_none(code: ErrorCode) -> None:
    row = row_of(code)
    if row.raised:
        assert row.tests, f"docs/errors.md:{row.line}: {row.name} is raised but no test is cited"
    else:
        assert row.tests == (), f"docs/errors.md:{row.line}: {row.name} is marked as not raised but cites tests"


@pytest.mark.parametrize("code", CODES, ids=lambda c: str(int(c)))
def test_each_cited_test_mentions_its_code(code: ErrorCode) -> None:
    row = row_of(code)
    silent = [t for t in row.tests if cited_function(t) is not None and not mentions(t, code)]
    assert silent == [], f"docs/errors.md:{row.line}: these tests never mention {row.name} ({row.value}): {silent}"


@pytest.mark.parametrize("code", CODES, ids=lambda c: str(int(c)))
def test_raised_codes_name_the_gme_source_they_follow(code: ErrorCode) -> None:
    row = row_of(code)
    if not row.raised:
        return
    named = sources(row)
    assert named is not None, (f"docs/errors.md:{row.line}: begin the cell with *GME: SOURCE.* "
                               f"(one of {sorted(SOURCES)}) or *OpenGME's choice*")
    assert named <= SOURCES, f"docs/errors.md:{row.line}: unknown sources {sorted(named - SOURCES)}"


@pytest.mark.parametrize("code", CODES, ids=lambda c: str(int(c)))
def test_raised_codes_cite_a_test_through_a_public_surface(code: ErrorCode) -> None:
    row = row_of(code)
    if row.raised:
        public = [t for t in row.tests if cited_function(t) is not None and PUBLIC_SURFACE in marks(t)]
        assert public, (f"docs/errors.md:{row.line}: {row.name} cites no test marked "
                        f"@pytest.mark.{PUBLIC_SURFACE} (one that goes through the SDK, a server socket, "
                        f"the CLI or a Python API): {list(row.tests)}")


def test_pure_core_tests_are_not_marked_public() -> None:
    cited = sorted(set(NODE_ID.findall(doc_text())))
    wrong = [t for t in cited if t.split("::")[0] in PURE_CORE_TESTS and cited_function(t) is not None
             and PUBLIC_SURFACE in marks(t)]
    assert wrong == [], f"these test a pure core, not a public surface: {wrong}"


# --- the page agrees with the source ---------------------------------------------------------------


def test_codes_the_source_uses_are_not_marked_unraised() -> None:
    wrong = [f"{r.value} {r.name} (line {r.line})" for r in rows()
             if r.value in raised_in_source() and r.when.startswith((*LATER, NOT_RAISED))]
    assert wrong == [], f"the source now uses these codes: update their rows in docs/errors.md: {wrong}"


def test_codes_marked_raised_are_used_by_the_source() -> None:
    unused = [f"{r.value} {r.name} (line {r.line})" for r in rows() if r.raised and r.value not in raised_in_source()]
    assert unused == [], f"docs/errors.md says OpenGME raises these, but no source file uses them: {unused}"


def test_the_checks_see_what_they_check() -> None:
    """Guards against a parser that silently finds nothing: known facts of the page and the tree."""
    assert row_of(ErrorCode.AV_ERR_AUTH_FIALD).raised
    assert not Row(0, "", "", f"{LATER[1]} x", (), "", 0).raised  # every code is raised now; the rule still holds
    assert int(ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST) in raised_in_source()
    node_id = "tests/test_sdk_session.py::test_1001_entering_during_an_entry"
    assert mentions(node_id, ErrorCode.AV_ERR_REPEATED_OPERATION)
    assert not mentions(node_id, ErrorCode.AV_ERR_FILE_DAMAGED)
    assert cited_function("tests/test_sdk_session.py::test_no_such_test") is None
    assert PUBLIC_SURFACE in marks("tests/test_sdk_context.py::test_everything_before_init_is_1101")
    assert PUBLIC_SURFACE not in marks(node_id)  # a pure session test
    assert sources(row_of(ErrorCode.AV_ERR_AUTH_FIALD)) == {"error table", "EnterRoom table"}
    assert sources(row_of(ErrorCode.AV_ERR_TINYID_TO_OPENID_FAILED)) == set()
