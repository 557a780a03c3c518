"""The ``vlsafety`` command line.

Global options (before the command): ``--conf FILE``, ``--set KEY=VALUE`` (repeatable,
dotted keys, typed by the config schema), ``--lake ROOT`` (= ``--set lake.root=ROOT``).
A bad option, config key or value exits with status 2 and one line naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from vlsafety.config import Config, ConfigError, load_config

__all__ = ["main"]

log = logging.getLogger("vlsafety")

EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        raise UsageError(message)


Handler = Callable[[argparse.Namespace, Config], int]
_HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return register


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _lake(cfg: Config, *, spark: bool = False) -> Any:
    from vlsafety.lake import Lake

    session = None
    if spark:
        from vlsafety.spark import get_spark

        session = get_spark(cfg.spark)
    return Lake(cfg.lake.root, session, storage_options=cfg.lake.storage_options)


# --------------------------------------------------------------------------- tables
@command("tables")
def _cmd_tables(args: argparse.Namespace, cfg: Config) -> int:
    lake = _lake(cfg)
    rows = []
    for name in lake.tables():
        hist = lake.history(name, limit=1)
        rows.append({"table": name, "version": lake.version(name), "updated": hist[0]["timestamp"]})
    text = "\n".join(f"{r['table']:<24} v{r['version']:<5} {r['updated']}" for r in rows)
    _emit(args, rows, text or f"no tables under {lake.root}")
    return 0


@command("history")
def _cmd_history(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.lake import validate_table_name

    lake = _lake(cfg)
    validate_table_name(args.table)
    hist = lake.history(args.table, limit=args.limit)
    lines = [f"{'version':>7}  {'timestamp':<32} {'operation':<10} {'rows':>8}  run / command"]
    for h in hist:
        rows = "" if h["rows"] is None else str(h["rows"])
        lines.append(
            f"{h['version']:>7}  {h['timestamp'] or '':<32} {h['operation'] or '':<10} {rows:>8}  "
            f"{h['run_id'] or '-'}  {h['command'] or ''}"
        )
    _emit(args, hist, "\n".join(lines))
    return 0


def _printable(table: Any, width: int = 60) -> Any:
    """pandas view of an arrow table: bytes as sizes, long lists/strings truncated."""
    df = table.to_pandas()
    for col in df.columns:

        def short(v: Any) -> Any:
            if isinstance(v, bytes | bytearray):
                return f"<{len(v)} bytes>"
            if hasattr(v, "__len__") and not isinstance(v, str | dict) and len(v) > 4:
                return f"[{', '.join(f'{x:.3g}' if isinstance(x, float) else str(x) for x in list(v)[:3])}, … ({len(v)})]"
            text = str(v)
            return text if len(text) <= width else text[: width - 1] + "…"

        df[col] = df[col].map(short)
    return df


@command("show")
def _cmd_show(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.lake import parse_table_ref

    name, version = parse_table_ref(args.table)
    lake = _lake(cfg)
    table = lake.read_arrow(name, version=version)
    shown = table.slice(0, args.limit)
    if args.json:
        rows = _printable(shown, width=10_000).to_dict(orient="records")
        print(
            json.dumps(
                {
                    "table": name,
                    "version": version if version is not None else lake.version(name),
                    "rows": table.num_rows,
                    "data": rows,
                },
                indent=2,
                default=str,
            )
        )
        return 0
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(_printable(shown).to_string(index=False))
    print(
        f"({min(args.limit, table.num_rows)} of {table.num_rows} rows; {name}@{version if version is not None else lake.version(name)})"
    )
    return 0


@command("diff")
def _cmd_diff(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.lake import parse_table_ref
    from vlsafety.lake_diff import diff_versions

    (a_name, a_ver), (b_name, b_ver) = parse_table_ref(args.old), parse_table_ref(args.new)
    lake = _lake(cfg, spark=True)
    keys = args.key.split(",") if args.key else None
    result = diff_versions(lake, a_name, a_ver, b_name, b_ver, keys=keys, limit=args.limit)
    lines = [
        f"{result['old']} -> {result['new']}  (keys: {', '.join(result['keys'])})",
        f"  added:   {result['added']}",
        f"  removed: {result['removed']}",
        f"  changed: {result['changed']}",
    ]
    for kind in ("added", "removed", "changed"):
        for row in result["examples"][kind]:
            sign = {"added": "+", "removed": "-", "changed": "~"}[kind]
            lines.append(f"  {sign} {json.dumps(row, default=str)[:200]}")
    _emit(args, result, "\n".join(lines))
    return 0


# ------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vlsafety",
        description="Build, update and run safety benchmarks for vision-language models.",
    )
    p.add_argument("--conf", help="config YAML (default: conf/demo.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable)",
    )
    p.add_argument("--lake", help="lake root (shorthand for --set lake.root=ROOT)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text)

    s = add("tables", "list the Delta tables in the lake")
    s.add_argument("--json", action="store_true")

    s = add("history", "versions of a table with their MLflow runs")
    s.add_argument("table")
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--json", action="store_true")

    s = add("show", "print rows of TABLE[@VERSION]")
    s.add_argument("table", metavar="TABLE[@VERSION]")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")

    s = add("diff", "rows added / removed / changed between two table versions")
    s.add_argument("old", metavar="TABLE@V1")
    s.add_argument("new", metavar="TABLE@V2")
    s.add_argument("--key", help="comma-separated key columns (default: the table's keys)")
    s.add_argument("--limit", type=int, default=5, help="example rows per kind")
    s.add_argument("--json", action="store_true")

    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(message)s",
            stream=sys.stderr,
        )
        overrides = list(args.overrides)
        if args.lake:
            overrides.append(f"lake.root={args.lake}")
        cfg = load_config(args.conf, overrides)
        return _HANDLERS[args.command](args, cfg)
    except (UsageError, ConfigError) as exc:
        print(f"vlsafety: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(
            f"vlsafety: error: {message.splitlines()[0] if message else type(exc).__name__}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("vlsafety: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
