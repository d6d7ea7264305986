"""The one wrapper for the command-line tools: a user's error is one line on stderr and exit status 2; --debug
shows the traceback instead."""
from __future__ import annotations

import argparse
import sys
from typing import Callable


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_cli(body: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """body(args) -> exit status (None: 0); any exception becomes one line unless args.debug."""
    try:
        return body(args) or 0
    except Exception as err:  # noqa: BLE001 - a user error is one line; --debug shows where it came from
        if getattr(args, "debug", False):
            raise
        return fail(str(err) or type(err).__name__)
