"""`opengme errors` (placeholder until its module lands)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("errors", parents=[common], help="(not yet available)")
    p.set_defaults(func=lambda args: 2)
