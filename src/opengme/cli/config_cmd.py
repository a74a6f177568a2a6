"""``opengme config``: the settings ``opengme serve`` would use here, and where each one came from."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from opengme.cli import resolved_settings, settings_command
from opengme.config import CONFIG_FILE
from opengme.db import redacted_url


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = settings_command(
        sub, common, "config", "show the effective settings and where each came from",
        "Print every setting `opengme serve` would use with the same flags in this directory, and its "
        "origin: the default, the settings file (and its [server] table), an OPENGME_* variable or a "
        "flag. Bad values are refused exactly as `serve` refuses them.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    found = resolved_settings(args)
    values = {name: str(v) if isinstance(v, Path) else v for name, v in asdict(found.settings).items()}
    values["database_url"] = redacted_url(found.settings.database_url)  # a password in it is not printed
    if args.json:
        print(json.dumps({
            "settings file": None if found.config_file is None else str(found.config_file),
            "settings": {name: {"value": value, "from": found.origins[name]} for name, value in values.items()},
        }, indent=2))
        return 0
    if found.config_file is None:
        print(f"settings file: none (no ./{CONFIG_FILE} here; --config FILE names one)")
    else:
        print(f"settings file: {found.config_file}")
    names, width = max(map(len, values)), max(len(str(v)) for v in values.values())
    print(f"{'SETTING':<{names}}  {'VALUE':<{width}}  FROM")
    for name, value in values.items():
        print(f"{name:<{names}}  {value!s:<{width}}  {found.origins[name]}")
    return 0
