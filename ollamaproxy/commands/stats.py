"""`ollamaproxy stats`: per backend and model request statistics from the SQLite request log."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys

from ollamaproxy.requestdb import default_db_path, query_stats

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in "90s", "30m", "24h", "7d" or "2w"; ValueError with an example otherwise."""
    match = _DURATION.match(text or "")
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit s, m, h, d or w, e.g. 30m, 24h, 7d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return seconds


class Duration(float):
    """Seconds that remember how the user wrote them ("24h")."""

    text: str


def _duration_arg(text: str) -> Duration:
    try:
        duration = Duration(parse_duration(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    duration.text = text.strip()
    return duration


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "stats", help="request statistics per backend and model from the request log",
        description="Requests, errors, latency percentiles and energy per backend and model, read from the "
                    "service's SQLite request log.")
    parser.add_argument("--since", default="24h", type=_duration_arg, metavar="DURATION",
                        help="how far back to look: 30m, 24h, 7d ... (default 24h)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--db", metavar="PATH", help=f"request database (default {default_db_path()})")
    parser.set_defaults(func=run)
    return parser


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def _joules(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(rows: list[dict]) -> str:
    headers = ("BACKEND", "MODEL", "REQUESTS", "ERRORS", "P50", "P95", "TTFB P50", "ENERGY J", "J/REQ")
    body = [(row["backend"] or "(none)", row["model"] or "(none)", str(row["requests"]), str(row["errors"]),
             _ms(row["p50_total_ms"]), _ms(row["p95_total_ms"]), _ms(row["p50_ttfb_ms"]),
             _joules(row["energy_j"]), _joules(row["mean_energy_j"])) for row in rows]
    widths = [max(len(cells[i]) for cells in (headers, *body)) for i in range(len(headers))]
    numeric = set(range(2, len(headers)))

    def line(cells) -> str:
        return "  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                         for i, cell in enumerate(cells)).rstrip()

    return "\n".join([line(headers), *(line(cells) for cells in body)])


def run(args: argparse.Namespace) -> int:
    path = args.db or str(default_db_path())
    try:
        rows = query_stats(path, args.since)
    except FileNotFoundError:
        print(f"ollamaproxy stats: no request database at {path}. The service creates it when it serves its "
              "first request; pass --db PATH to read another one.", file=sys.stderr)
        return 1
    except sqlite3.Error as error:
        print(f"ollamaproxy stats: cannot read {path}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"database": path, "since_seconds": float(args.since), "stats": rows}, indent=2))
        return 0
    span = getattr(args.since, "text", None) or f"{args.since:g}s"
    if not rows:
        print(f"no requests in the last {span} ({path})")
        return 0
    total = sum(row["requests"] for row in rows)
    errors = sum(row["errors"] for row in rows)
    print(f"{total} request(s), {errors} error(s) in the last {span} ({path})\n")
    print(format_table(rows))
    return 0
