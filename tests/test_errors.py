"""The error registry against GME's own table (the seed), and the API built on it."""
from __future__ import annotations

import html
import json
import pickle
import re
from dataclasses import dataclass
from importlib.resources import files

import pytest

from opengme.errors import (
    Category,
    ErrorCode,
    ErrorInfo,
    GmeError,
    all_errors,
    describe,
    info,
    plain,
    search,
)
from support.paths import SEED

SECTIONS = {
    "General Errors": Category.GENERAL,
    "Client Errors for Voice Chat": Category.VOICE_CHAT_CLIENT,
    "Server Errors for Voice Chat": Category.VOICE_CHAT_SERVER,
    "Speech-to-Text Errors": Category.PTT_STT,
}
needs_seed = pytest.mark.skipif(not SEED.exists(), reason=f"GME's error table (the seed) is not at {SEED}")


@dataclass(frozen=True)
class SeedRow:
    category: Category
    name: str
    value: int
    cells: tuple[str, ...]  # the text columns, in the seed's order, whitespace normalised


def norm(text: str) -> str:
    return " ".join(text.split())


def parse_seed(text: str) -> list[SeedRow]:
    """Every data row of the seed's four tables, taking the cells literally by position."""
    rows = []
    for title, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S):
        category = SECTIONS[title.strip()]
        if "<table>" in body:
            trs = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
            raw = [re.findall(r"<td>(.*?)</td>", tr, flags=re.S) for tr in trs]
        else:
            raw = [line.strip().strip("|").split("|") for line in body.splitlines() if line.startswith("|")]
        for cells in raw:
            cells = [norm(html.unescape(c)) for c in cells]
            if len(cells) < 3 or not cells[1].isdigit():
                continue  # header, separator or a <th> row
            name = re.sub(r"<br>|\\|\s", "", cells[0])
            rows.append(SeedRow(category, name, int(cells[1]), tuple(cells[2:])))
    return rows


@pytest.fixture(scope="module")
def seed_rows() -> list[SeedRow]:
    return parse_seed(SEED.read_text(encoding="utf-8"))


def registry_text(entry: ErrorInfo, field: str, seed_text: str, used: set[tuple[int, str]]) -> str:
    """What the registry should hold for a seed cell: the same text, unless a correction says otherwise."""
    for c in entry.corrections:
        if c.field == field and c.seed == seed_text:
            used.add((entry.value, field))
            return c.fixed
    return seed_text


@needs_seed
def test_every_seed_row_is_in_the_registry_with_its_texts(seed_rows: list[SeedRow]) -> None:
    assert len(seed_rows) == 87
    used: set[tuple[int, str]] = set()
    rows_per_value: dict[int, int] = {}
    for row in seed_rows:
        entry = info(row.value)
        assert (entry.name, entry.value, entry.category) == (row.name, row.value, row.category)
        if row.category is Category.GENERAL:  # one combined column, kept verbatim and split by us
            assert entry.seed_text == row.cells[0] and entry.derived
            assert entry.description and entry.cause and entry.solution
            continue
        description, cause, solution = row.cells[:3]
        k = rows_per_value.get(row.value, 0)
        rows_per_value[row.value] = k + 1
        assert entry.description == registry_text(entry, "description", description, used)
        assert entry.causes[k] == registry_text(entry, "causes", cause, used)
        assert entry.solutions[k] == registry_text(entry, "solutions", solution, used)
        assert entry.seed_text is None and not entry.derived
    assert {(e.value, c.field) for e in all_errors() for c in e.corrections} == used  # none unexplained
    assert all(len(info(v).causes) == n for v, n in rows_per_value.items())


@needs_seed
def test_exactly_the_seed_codes_and_the_enum_agree(seed_rows: list[SeedRow]) -> None:
    values = {row.value for row in seed_rows}
    assert len(values) == 85
    outside = {e.value for e in all_errors() if e.category is Category.AUDIO_EFFECTS}  # GME's API pages
    assert outside == set(range(4001, 4008)) | set(range(4051, 4058)) and not outside & values
    assert [e.value for e in all_errors()] == sorted(values | outside)
    assert {int(c) for c in ErrorCode} == values | outside | {0}
    assert all(e.name == e.code.name and e.code == e.value for e in all_errors())


@needs_seed
def test_codes_listed_twice_keep_both_rows(seed_rows: list[SeedRow]) -> None:
    for value in (8195, 32775):
        rows = [r for r in seed_rows if r.value == value]
        assert len(rows) == 2
        entry = info(value)
        assert entry.causes == tuple(r.cells[1] for r in rows)
        assert entry.solutions == tuple(r.cells[2] for r in rows)
    assert info(32775).cause == " / ".join(info(32775).causes)
    assert info(8195).solution == info(8195).solutions[0]  # the same text twice is said once


def test_corrections_are_recorded_not_silent() -> None:
    server_timeout = info(ErrorCode.AV_ERR_SERVER_TIMEOUT)
    assert server_timeout.description == "Timeout"
    (fix,) = server_timeout.corrections
    assert (fix.field, fix.seed, fix.fixed) == ("description", "Hour", "Timeout")
    assert "Hour" in server_timeout.correction
    for value in (12294, 12295):  # download errors whose seed text says "upload parameters"
        (fix,) = info(value).corrections
        assert "upload parameters" in fix.seed and info(value).cause == fix.fixed
        assert "download parameters" in info(value).cause
    for value in (4098, 20481):  # a stray empty cell pushed the solution one column right
        (fix,) = info(value).corrections
        assert (fix.field, fix.seed) == ("solutions", "")
        assert info(value).solution.startswith("Confirm that the device is not occupied")
    assert info(7006).correction is None


def test_categories() -> None:
    counts = {cat: sum(e.category is cat for e in all_errors()) for cat in Category}
    assert counts == {Category.GENERAL: 13, Category.VOICE_CHAT_CLIENT: 24,
                      Category.VOICE_CHAT_SERVER: 11, Category.PTT_STT: 37, Category.AUDIO_EFFECTS: 14}
    assert info(7006).category == "general" and info(50012).category is Category.PTT_STT


def test_corrected_spellings_are_aliases_of_gme_names() -> None:
    assert ErrorCode.AV_ERR_AUTH_FAILED is ErrorCode.AV_ERR_AUTH_FIALD
    assert ErrorCode.AV_ERR_NET_REQUEST_FAILED is ErrorCode.AV_ERR_NET_REQUEST_FALLED
    assert ErrorCode(7006).name == "AV_ERR_AUTH_FIALD"
    assert len(ErrorCode) == 100  # aliases add no members
    assert ErrorCode.QAV_ERR_ACC_STATE_ILLEGAL is ErrorCode.QAV_ERR_ACC_STATE_ILLIGAL
    assert info(4052).aliases == ("QAV_ERR_EFFECT_FILE_FORMAT_NOTSUPPORT",)
    assert info(7006).aliases == ("AV_ERR_AUTH_FAILED",)
    assert info(7005).aliases == ()


def test_info_lookup() -> None:
    assert info(7006) is info(ErrorCode.AV_ERR_AUTH_FIALD)
    assert info(7006).description == "Authentication failed"
    assert "authbuff" in info(7006).cause and "expired" in info(7006).cause
    ok = info(0)
    assert (ok.code, ok.description, ok.causes) == (ErrorCode.AV_OK, "Success", ())
    assert ok not in all_errors()
    with pytest.raises(ValueError, match="unknown GME error code 99999"):
        info(99999)


def test_package_data_is_the_registry() -> None:
    data = json.loads(files("opengme").joinpath("data/errors.json").read_text(encoding="utf-8"))
    assert len(data) == 99  # the seed's 85 and accompaniment/effects' 14
    by_value = {e.value: e.to_dict() for e in all_errors()}
    for raw in data:
        exported = by_value[raw["value"]]
        assert exported["corrections"] == raw.pop("corrections", [])
        assert {k: exported[k] for k in raw} == raw


def test_search_matches_every_word_in_names_and_texts() -> None:
    assert [e.value for e in search("upload sign")] == [8194]
    assert search("AUTH") == search("auth")
    auth = {e.value for e in search("auth")}
    assert {7006, 8194, 12290, 32776} <= auth and 1001 not in auth
    assert [e.value for e in search("upload 8194")] == [8194]  # a number matches the value...
    assert search("download 8194") == []
    assert search("30") == []  # ...and not text ("30 seconds" is in 1005's cause)
    assert [e.value for e in search("AV_ERR_AUTH_FAILED")] == [7006]  # aliases
    assert len(search("voice_chat_server")) == 11  # categories
    assert search("InitSpatializer")[0].value == 7003  # the General table's seed text
    assert search("") == all_errors()
    assert search("no-such-word") == []


def test_every_name_finds_exactly_its_entry() -> None:
    for entry in all_errors():
        assert search(entry.name) == [entry]


def test_gme_error_renders_one_explaining_line() -> None:
    err = GmeError(ErrorCode.AV_ERR_AUTH_FIALD, "AuthBuffer expired at 2026-01-01T00:00:00Z")
    text = str(err)
    assert text.startswith("AV_ERR_AUTH_FIALD (7006): Authentication failed — ")
    assert plain(info(7006).cause) in text and plain(info(7006).solution) in text
    assert text.endswith(" [detail: AuthBuffer expired at 2026-01-01T00:00:00Z]")
    assert "\n" not in text and "`" not in text
    assert (err.code, err.detail, err.info) == (err.args[0], err.args[1], info(7006))
    assert err.code is ErrorCode.AV_ERR_AUTH_FIALD and err.detail.startswith("AuthBuffer expired")
    assert not str(GmeError(1001)).endswith("]")
    assert GmeError(7006).code is ErrorCode.AV_ERR_AUTH_FIALD  # plain ints are accepted
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.code, copy.detail, str(copy)) == (err.code, err.detail, text)
    with pytest.raises(ValueError):
        GmeError(99999)


def test_gme_error_links_become_plain_text() -> None:
    text = str(GmeError(ErrorCode.AV_ERR_NET_REQUEST_FALLED))
    assert "FAQ > Voice Chat Room (https://intl.cloud.tencent.com/document/product/607/35611)" in text
    assert "](" not in text


def test_describe_is_a_short_line_for_error_info() -> None:
    assert describe(7006) == "AV_ERR_AUTH_FIALD (7006): Authentication failed"
    assert describe(ErrorCode.AV_ERR_SERVER_TIMEOUT) == "AV_ERR_SERVER_TIMEOUT (10004): Timeout"
    assert describe(1401) == "AV_ERR_ENDPOINT_NOT_EXIST (1401): The AVEndpoint object does not exist"
    assert describe(ErrorCode.AV_OK) == ""  # GME's payloads carry an empty error_info on success
