"""`opengme errors`: explain a GME error code, or find codes by words, from the built-in registry."""
from __future__ import annotations

import argparse
import json
import shutil
import textwrap

from opengme.cli import CliError
from opengme.errors import ErrorInfo, all_errors, info, plain, search

_EXAMPLES = """\
examples:
  opengme errors                  list every code, one per line
  opengme errors 7006             explain one code (several values: one line each)
  opengme errors auth             codes whose name or text contains "auth"
  opengme errors upload sign      codes matching every word
  opengme errors 7006 --json      the entry as JSON (a JSON array, whatever the query)
"""
_DESCRIPTION = """\
Explain GME's error codes (the registry built into OpenGME).

A QUERY made only of numbers selects those values. Other words select the codes
whose name (or corrected spelling), category or any of its texts contains every
word, ignoring case; a number among words must equal the value. One match is
shown in full, several as one line each. Exit status 2 if a value is unknown or
nothing matches.
"""
_INDENT = 15  # where a block's texts start: two spaces, a label, a space


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "errors",
        parents=[common],
        help="look up GME error codes: by value, or by words in their names and texts",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", nargs="*", metavar="QUERY", help="error values or search words (none: all)")
    p.add_argument("--json", action="store_true", help="print the selected entries as a JSON array")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entries = select(args.query)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], ensure_ascii=False, indent=2))
    elif len(entries) == 1:
        print(block(entries[0]))
    else:
        print("\n".join(line(e) for e in entries))
    return 0


def select(query: list[str]) -> list[ErrorInfo]:
    """The entries a query names: all of them, the given values, or the search hits."""
    if not query:
        return all_errors()
    if all(word.isdigit() for word in query):
        try:
            return [info(int(word)) for word in dict.fromkeys(query)]
        except ValueError as exc:
            raise CliError(f"{exc} (`opengme errors` lists them all)", 2) from None
    found = search(" ".join(query))
    if not found:
        raise CliError(f"no error code matches {' '.join(query)!r}", 2)
    return found


def line(entry: ErrorInfo) -> str:
    return f"{entry.value:>5}  {entry.name:<50}  {plain(entry.description)}"


def block(entry: ErrorInfo) -> str:
    """The full entry, wrapped to the terminal, labels on the left."""
    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    rows: list[tuple[str, str]] = [("category", entry.category), ("description", entry.description)]
    if entry.aliases:
        rows.insert(0, ("also named", ", ".join(entry.aliases)))
    for label, texts in (("cause", entry.causes), ("solution", entry.solutions)):
        distinct = list(dict.fromkeys(texts))  # 8195 gives the same solution for both its rows
        if len(distinct) == 1:
            rows.append((label, distinct[0]))
        else:  # the seed lists the code twice: numbered, so cause n pairs with solution n
            rows += [(label + "s" if n == 1 else "", f"{n}. {t}") for n, t in enumerate(distinct, 1)]
    if entry.seed_text is not None:
        note = "(description, cause and solution above: our split of it)"
        rows.append(("seed text", f"{entry.seed_text} {note}"))
    rows += [("correction", str(c)) for c in entry.corrections]
    wrap = textwrap.TextWrapper(
        width, subsequent_indent=" " * _INDENT, break_long_words=False, break_on_hyphens=False
    )
    lines = [wrap.fill(f"  {label:<{_INDENT - 3}} {plain(text)}") for label, text in rows]
    return "\n".join([f"{entry.name} ({entry.value})", *lines])
