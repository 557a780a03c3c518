"""The ``vlsafety`` command line.

Global options (before the command): ``--conf FILE``, ``--set KEY=VALUE`` (repeatable,
dotted keys, typed by the config schema), ``--lake ROOT`` (= ``--set lake.root=ROOT``).
A bad option, config key or value exits with status 2 and one line naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
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
    # with a session: refuses a local root its executors cannot share (exit 2, one line)
    return Lake.from_config(cfg.lake, session)


def _ref(text: str, what: str) -> tuple[str, int | None]:
    """``TABLE[@VERSION]`` of a command argument; a malformed one is a usage error."""
    from vlsafety.lake import parse_table_ref

    try:
        return parse_table_ref(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _probe(cfg: Config) -> Any:
    """A lake that reads Delta logs without Spark, to check a command's inputs before the
    session starts; None for a ``dbfs:/`` root (only Spark's native Delta reads it)."""
    from vlsafety.lake import Lake, LakeError

    try:
        return Lake.from_config(cfg.lake)
    except LakeError:
        return None


def _require(
    cfg: Config, what: str, table: str, version: int | None, kind: Any, lake: Any = None
) -> int:
    """:func:`vlsafety.kinds.require_table` before any Spark work; the version read."""
    from vlsafety.kinds import require_table

    probe = lake if lake is not None else _probe(cfg)
    if probe is None:  # dbfs:/: checked on the Spark lake
        probe = _lake(cfg, spark=True)
    return require_table(probe, table, version, kind, what=what)


def _require_present(cfg: Config, what: str, tables: dict[str, Any]) -> None:
    """Tables a command merges into: each must be of its kind if the lake has it."""
    from vlsafety.kinds import check_if_present

    probe = _probe(cfg) or _lake(cfg, spark=True)
    for table, kind in tables.items():
        check_if_present(probe, table, kind, what=f"{what} (merges into {table})")


def _require_stage_inputs(cfg: Config, what: str, stages: Sequence[str]) -> None:
    from vlsafety.kinds import stage_inputs, stage_outputs

    for table, kind in stage_inputs(stages, has_sources=bool(cfg.build.sources)).items():
        _require(cfg, what, table, None, kind)
    _require_present(cfg, what, stage_outputs(stages))


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


@command("gc")
def _cmd_gc(args: argparse.Namespace, cfg: Config) -> int:
    import dataclasses

    if not args.older_than_hours >= 0:
        raise UsageError(f"gc: --older-than-hours must be >= 0, got {args.older_than_hours}")
    rep = _lake(cfg).collect_garbage(
        older_than_s=args.older_than_hours * 3600.0, dry_run=args.dry_run
    )
    verb = "would remove" if rep.dry_run else "removed"
    lines = [
        f"{verb} {len(rep.stages)} unreferenced stage folder(s) and {len(rep.scratch)} "
        f"scratch folder(s): {rep.n_files} file(s), {rep.n_bytes / 1e6:.1f} MB",
        *(f"  {p}" for p in [*rep.stages, *rep.scratch]),
    ]
    if rep.young:
        lines.append(
            f"kept {rep.young} folder(s) younger than {args.older_than_hours:g} h "
            "(a writer may still commit them)"
        )
    if rep.skipped:
        lines.append(f"skipped native-Delta tables (use VACUUM): {', '.join(rep.skipped)}")
    _emit(args, dataclasses.asdict(rep), "\n".join(lines))
    return 0


@command("history")
def _cmd_history(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.lake import validate_table_name

    lake = _lake(cfg)
    try:
        validate_table_name(args.table)
    except ValueError as exc:
        raise UsageError(f"history: {exc}") from None
    _require(cfg, f"history {args.table}", args.table, None, None, lake)
    hist = lake.history(args.table, limit=args.limit)
    lines = [
        f"{'version':>7}  {'timestamp':<32} {'operation':<10} {'rows':>8}  "
        "MLflow run (stage)  command"
    ]
    for h in hist:
        rows = "" if h["rows"] is None else str(h["rows"])
        meta = h.get("metadata") or {}
        # the job's run (what the MLflow UI lists); the stage that committed, if any
        run = meta.get("job_run_id") or h["run_id"] or "-"
        stage = f" ({meta['stage']})" if meta.get("stage") else ""
        lines.append(
            f"{h['version']:>7}  {h['timestamp'] or '':<32} {h['operation'] or '':<10} {rows:>8}  "
            f"{run}{stage}  {h['command'] or ''}"
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
    name, version = _ref(args.table, "show")
    lake = _lake(cfg)
    version = _require(cfg, f"show {args.table}", name, version, None, lake)
    table = lake.read_arrow(name, version=version)
    shown = table.slice(0, args.limit)
    if args.json:
        rows = _printable(shown, width=10_000).to_dict(orient="records")
        print(
            json.dumps(
                {
                    "table": name,
                    "version": version,
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
    print(f"({min(args.limit, table.num_rows)} of {table.num_rows} rows; {name}@{version})")
    return 0


@command("diff")
def _cmd_diff(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.kinds import TableKindError
    from vlsafety.lake_diff import diff_versions

    (a_name, a_ver), (b_name, b_ver) = _ref(args.old, "diff"), _ref(args.new, "diff")
    what = f"diff {args.old} {args.new}"
    probe = _probe(cfg)
    a_ver = _require(cfg, what, a_name, a_ver, None, probe)
    b_ver = _require(cfg, what, b_name, b_ver, None, probe)
    keys = args.key.split(",") if args.key else None
    if probe is not None:  # the key columns, in both versions (diff_versions' default keys)
        wanted = keys or probe.keys(b_name) or probe.keys(a_name)
        for name, version in ((a_name, a_ver), (b_name, b_ver)):
            absent = [k for k in wanted if k not in probe.schema(name, version).names]
            if absent:
                raise TableKindError(
                    f"{what}: table {name!r} (version {version}) has no key column(s) {', '.join(absent)}"
                    + ("" if args.key else " (give the columns to match rows on with --key)")
                )
    lake = _lake(cfg, spark=True)
    result = diff_versions(lake, a_name, a_ver, b_name, b_ver, keys=keys, limit=args.limit)
    _emit(args, result, "\n".join(_diff_lines(result)))
    return 0


#: Columns worth showing for an added/removed row, when the table has them.
_DIFF_SUMMARY_COLUMNS = ("category", "strategy", "origin", "model_id", "score")


def _short(v: Any, width: int = 40) -> str:
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def _diff_lines(result: dict[str, Any]) -> list[str]:
    keys = result["keys"]
    lines = [
        f"{result['old']} -> {result['new']}  (keys: {', '.join(keys) or 'whole rows'})",
        f"  added:   {result['added']}",
        f"  removed: {result['removed']}",
        f"  changed: {result['changed']}",
    ]
    if result.get("changed_columns"):
        shown = ", ".join(f"{c} ({n})" for c, n in list(result["changed_columns"].items())[:8])
        lines.append(f"  changed columns: {shown}")

    def ident(row: dict[str, Any]) -> str:
        return " ".join(f"{k}={_short(row.get(k), 16)}" for k in keys)

    for kind, sign in (("added", "+"), ("removed", "-")):
        for row in result["examples"][kind]:
            cols = [c for c in _DIFF_SUMMARY_COLUMNS if c in row] or [
                c for c, v in row.items() if c not in keys and not isinstance(v, dict | list)
            ][:4]
            extra = " ".join(f"{c}={_short(row[c])}" for c in cols)
            lines.append(f"  {sign} {ident(row) or _short(row, 100)}  {extra}".rstrip())
    for row in result["examples"]["changed"]:
        changes = ", ".join(
            f"{c}: {_short(old, 24)} -> {_short(new, 24)}"
            for c, (old, new) in list(row["changes"].items())[:4]
        )
        lines.append(f"  ~ {ident(row)}  {changes}")
    return lines


# ---------------------------------------------------------------- pipeline jobs
def _ctx(cfg: Config) -> Any:
    return _lake(cfg, spark=True)


def _print_counts(args: argparse.Namespace, counts: dict[str, Any], title: str) -> None:
    text = (
        title
        + "\n"
        + "\n".join(f"  {k}: {v}" for k, v in counts.items() if not isinstance(v, list | dict))
    )
    _emit(args, counts, text)


@command("demo-data")
def _cmd_demo_data(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.ingest.demo_data import write_demo_data

    manifest = write_demo_data(
        args.dir, n=args.n, seed=args.seed if args.seed is not None else cfg.seed
    )
    _emit(
        args,
        {"manifest": str(manifest)},
        f"demo pool written; ingest it with: --source manifest:{manifest}",
    )
    return 0


@command("models")
def _cmd_models(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.models.tiny import make_tiny

    path = make_tiny(args.dir, seed=cfg.seed, force=args.force)
    _emit(args, {"models_yaml": str(path)}, f"tiny random-weight models ready: {path}")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed (recorded on MLflow runs and Delta commits)."""
    return "vlsafety " + shlex.join(getattr(args, "argv", None) or [args.command])


def _run_one_stage(name: str, args: argparse.Namespace, cfg: Config) -> int:
    """One build stage as its own command: the same code, counts and MLflow records."""
    from vlsafety.pipeline import build

    _require_stage_inputs(cfg, name, (name,))
    lake = _ctx(cfg)
    result = build(cfg, lake, stages=(name,), command=_command_line(args))
    stage = result.stages[0]
    _print_counts(args, stage.as_dict(), name)
    return 0


@command("ingest")
def _cmd_ingest(args: argparse.Namespace, cfg: Config) -> int:
    import dataclasses

    from vlsafety.ingest import parse_source

    if args.source:
        cfg = dataclasses.replace(
            cfg, build=dataclasses.replace(cfg.build, sources=list(args.source))
        )
    if args.limit is not None:
        if args.limit <= 0:
            raise UsageError(f"ingest --limit: expected a positive number, got {args.limit}")
        cfg = dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, limit=args.limit))
    if not cfg.build.sources:
        raise UsageError(
            "ingest: give at least one --source KIND:PATH (or build.sources in the config)"
        )
    for spec in cfg.build.sources:
        try:
            parse_source(spec)
        except ValueError as exc:
            raise UsageError(f"ingest --source: {exc}") from None
    if args.as_benchmark is not None and args.dry_run:
        raise UsageError("ingest: --as-benchmark writes a table; drop --dry-run")
    if args.as_benchmark is not None:
        return _ingest_benchmark(args, cfg)
    if args.dry_run:
        from vlsafety.ingest import dry_run, format_dry_run

        reports = dry_run(list(cfg.build.sources), cfg.ingest)
        _emit(args, [r.as_dict() for r in reports], format_dry_run(reports))
        return 0
    return _run_one_stage("ingest", args, cfg)


def _ingest_benchmark(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.kinds import IMAGES, PUBLIC_BENCHMARK, REJECTS
    from vlsafety.lake import validate_table_name
    from vlsafety.pipeline import ingest_benchmark

    name = args.as_benchmark
    what = f"ingest --as-benchmark {name}"
    try:
        validate_table_name(name)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None
    if not args.source:
        raise UsageError(f"{what}: give the public benchmark with --source KIND:PATH")
    # a re-ingest overwrites NAME: only ever a public benchmark, never a pool or a build's
    _require_present(cfg, what, {name: PUBLIC_BENCHMARK})
    _require_present(cfg, what, {"images": IMAGES, "rejects": REJECTS})
    try:
        result = ingest_benchmark(
            cfg, _ctx(cfg), list(args.source), name, command=_command_line(args)
        )
    except ValueError as exc:
        if "given twice" in str(exc):
            raise UsageError(str(exc)) from None
        raise
    counts = result["counts"]
    text = [
        f"public benchmark {result['benchmark']}: {result['rows']} of {result['listed']} "
        f"records (rejected {result['rejected']}; see rejects)",
        *(f"  {k}: {v}" for k, v in counts.items() if k.startswith(("rejected.", "valid.rej"))),
    ]
    _emit(args, result, "\n".join(text))
    return 0


def _stage_command(name: str) -> Handler:
    def handler(args: argparse.Namespace, cfg: Config) -> int:
        return _run_one_stage(name, args, cfg)

    return handler


for _stage in ("preprocess", "generate", "augment"):
    command(_stage)(_stage_command(_stage))


def _parse_weights(text: str | None, default: list[float]) -> list[float]:
    if text is None:
        return list(default)
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--weights: expected three numbers like 0.5,0.3,0.2, got {text!r}"
        ) from None
    if len(weights) != 3:
        raise UsageError(f"--weights: expected three numbers (alpha,beta,gamma), got {text!r}")
    return weights


def _needs_panel_scores(cfg: Config, mode: str, parquet: bool, ref: str) -> bool:
    """elite-filter over a lake benchmark without ELITE scores (a public benchmark): the
    panel scores it first (ELITE §3.4 filters public benchmarks by its evaluator)."""
    if mode != "elite-filter" or parquet:
        return False
    name, version = _ref(ref, "select --input")
    probe = _probe(cfg) or _lake(cfg, spark=True)
    if not probe.exists(name):
        return False  # require_table says so, in one line
    latest = probe.version(name)
    if version is not None and version > latest:
        return False
    names = probe.schema(name, latest if version is None else version).names
    return "elite" not in names and "elite_scores" not in names


@command("select")
def _cmd_select(args: argparse.Namespace, cfg: Config) -> int:
    from pathlib import Path

    import pyarrow.parquet as pq

    from vlsafety.kinds import (
        BENCHMARK,
        IMAGES,
        JUDGMENTS,
        RESPONSES,
        Kind,
        check_columns,
        selection_input,
    )
    from vlsafety.selection import OUTPUT_COLUMNS, select_table
    from vlsafety.tracking import track

    weights = _parse_weights(args.weights, cfg.select.weights)
    mode = args.mode or cfg.select.mode
    elite = cfg.select.elite
    # elite-filter keeps what the filter keeps unless N_max is asked for (--n-max or
    # select.elite.n_max); select.n_max is Algorithm 1's benchmark size.
    default_n_max = cfg.select.n_max if mode == "greedy" else elite.n_max
    n_max = args.n_max if args.n_max is not None else default_n_max
    balancing = mode == "elite-filter" and elite.balance.max_source_share is not None
    kind = selection_input(mode, source_balancing=balancing)
    what = f"select --input {args.input}"
    src = Path(args.input)
    parquet = src.suffix == ".parquet" or src.is_file()
    score_first = _needs_panel_scores(cfg, mode, parquet, args.input)
    out = args.out
    if parquet:
        if not src.is_file():
            raise UsageError(f"{what}: file not found")
        check_columns(what, pq.read_schema(src).names, kind)
    elif score_first:
        name, version = _ref(args.input, "select --input")
        needed = Kind(
            "a benchmark",
            (*BENCHMARK.columns, *(("source",) if balancing else ())),
            hint=BENCHMARK.hint,
        )
        version = _require(cfg, what, name, version, needed)
        _require(cfg, what, "images", None, IMAGES)
        _require_present(cfg, what, {"responses": RESPONSES, "judgments": JUDGMENTS})
        out = out or name  # the filtered benchmark: the input table's next version
    else:
        name, version = _ref(args.input, "select --input")
        version = _require(cfg, what, name, version, kind)
    lake = _lake(cfg, spark=out is not None or score_first)
    with track(cfg, _command_line(args), lake=lake) as rec:
        from vlsafety.pipeline._build import in_table_order, read_for_selection
        from vlsafety.selection import DatasetColumn

        stages = []
        embeddings = None
        if score_first:
            from vlsafety.pipeline import load_models
            from vlsafety.pipeline._public import panel_score

            models = load_models(cfg)
            if models.evaluator is None:
                raise UsageError(f"{what}: elite-filter needs models.evaluator (the ELITE judge)")
            table, stage = panel_score(
                cfg, lake, lake.read(name, version=version), models, parent=rec
            )
            stages.append(stage)
            table = table.drop_columns([c for c in OUTPUT_COLUMNS if c in table.column_names])
            order = table.column_names
        elif parquet:
            import pyarrow.dataset as ds

            dataset = ds.dataset(src, format="parquet")
            order = dataset.schema.names
            embeddings = DatasetColumn(dataset, "embedding") if "embedding" in order else None
            table = dataset.to_table(columns=[c for c in order if c != "embedding"])
        else:
            order = lake.schema(name, version).names
            table, embeddings = read_for_selection(lake, name, version)
        # a lake table (scored, a benchmark) names its ids and ELITE scores as the build
        # writes them; select_table reads sample_id and elite_scores
        renames = {"candidate_id": "sample_id", "elite": "elite_scores"}
        names = {
            c: n
            for c, n in renames.items()
            if c in table.column_names and n not in table.column_names
        }
        table = table.rename_columns([names.get(c, c) for c in table.column_names])
        category_names = None
        if args.taxonomy:
            from vlsafety.taxonomy import load_taxonomy

            category_names = load_taxonomy(args.taxonomy).names
        selected, summary = select_table(
            table,
            n_max=n_max,
            weights=weights,
            mode=mode,
            category_names=category_names,
            threshold=cfg.select.threshold,
            min_votes=elite.min_votes,
            single_model_exception=elite.single_model_exception,
            per_category_cap=elite.balance.per_category_cap,
            max_source_share=elite.balance.max_source_share,
            device=cfg.select.engine,
            embeddings=embeddings,
        )
        back = {v: k for k, v in names.items()}
        selected = selected.rename_columns([back.get(c, c) for c in selected.column_names])
        selected = in_table_order(selected, order)
        rejects = summary.pop("rejects", [])
        if stages:
            summary["stages"] = stages
        if out:
            summary["out_version"] = lake.write(
                selected,
                out,
                "overwrite",
                keys=["candidate_id"] if "candidate_id" in selected.column_names else None,
                metadata={
                    "select_of": args.input if parquet else f"{name}@{version}",
                    "mode": mode,
                },
            )
            summary["out"] = out
            if rejects:
                from vlsafety.pipeline._build import write_reject_rows

                write_reject_rows(lake, "select", rejects)
        rec.log_metrics(
            {
                f"quality.{k}": v
                for k, v in summary.get("metrics", {}).items()
                if isinstance(v, int | float)
            }
        )
        rec.log_dict(summary, "selection_summary.json")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        metrics = summary.get("metrics", {})
        print(f"selected {selected.num_rows} of {table.num_rows} ({summary.get('mode')})")
        reasons: dict[str, int] = {}
        for r in rejects:
            reasons[str(r.get("reason"))] = reasons.get(str(r.get("reason")), 0) + 1
        for reason, n in sorted(reasons.items()):
            print(f"  dropped ({reason}): {n}")
        for k, v in metrics.items():
            print(f"  {k}: {v}")
        if out:
            print(f"written to {out}@{summary['out_version']}")
    return 0


@command("build")
def _cmd_build(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.pipeline import BUILD_STAGES, build

    stages = tuple(args.stages.split(",")) if args.stages else BUILD_STAGES
    unknown = [s for s in stages if s not in BUILD_STAGES]
    if unknown:
        raise UsageError(
            f"build --stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(BUILD_STAGES)}"
        )
    _require_stage_inputs(cfg, "build", [s for s in BUILD_STAGES if s in stages])
    lake = _ctx(cfg)
    result = build(cfg, lake, stages=stages, command=_command_line(args))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(
            f"benchmark {cfg.build.benchmark_table}@{result.benchmark_version}  (MLflow run {result.run_id})"
        )
        for k, v in result.summary.items():
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0


@command("update")
def _cmd_update(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.kinds import CANDIDATE_EMBEDDINGS, IMAGES, JUDGMENTS, RESPONSES, SAMPLES, SCORED
    from vlsafety.pipeline import update
    from vlsafety.pipeline._update import quality_table

    name, version = _ref(args.benchmark, "update --benchmark")
    what = f"update --benchmark {args.benchmark}"
    version = _require(cfg, what, name, version, SAMPLES)
    pool, pool_version = _ref(args.pool, "update --pool")
    # the pool the replacements come from: any build's scored table version
    pool_version = _require(cfg, f"{what} --pool {args.pool}", pool, pool_version, SCORED)
    _require(cfg, what, "images", None, IMAGES)
    _require_present(
        cfg,
        what,
        {
            "candidate_embeddings": CANDIDATE_EMBEDDINGS,
            "responses": RESPONSES,
            "judgments": JUDGMENTS,
        },
    )
    if not 0.0 <= args.replace <= 1.0:
        raise UsageError(f"update --replace: expected a share in [0, 1], got {args.replace}")
    lake = _ctx(cfg)
    summary = update(
        cfg,
        lake,
        name,
        version,
        replace=args.replace,
        out=args.out,
        where=args.where,
        pool=pool,
        pool_version=pool_version,
        command=_command_line(args),
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(
            f"{summary['source']} -> {summary['out']}: replaced {len(summary['removed'])} of "
            f"{summary['n_before']} with {len(summary['added'])} from {summary['pool']}"
            + (
                f" ({summary['n_excluded']} multiple-choice questions excluded)"
                if summary["n_excluded"]
                else ""
            )
        )
        print("\n".join(quality_table(summary["before"], summary["after"])))
    return 0


# -------------------------------------------------------------- contamination
@command("contamination")
def _cmd_contamination(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.contamination import (
        NoSourcesError,
        check_contamination,
        format_summary,
        ingested_sources,
        resolve_against,
    )
    from vlsafety.kinds import CONTAMINATION, IMAGES, RAW_POOL, SAMPLES

    name, version = _ref(args.benchmark, "contamination --benchmark")
    what = f"contamination --benchmark {args.benchmark}"
    version = _require(cfg, what, name, version, SAMPLES)
    _require(cfg, what, "raw_pool", None, RAW_POOL)
    _require(cfg, what, "images", None, IMAGES)
    _require_present(cfg, what, {"contamination": CONTAMINATION})
    against = [a for part in args.against or [] for a in part.split(",") if a] or None
    probe = _probe(cfg)
    try:
        if probe is not None and probe.exists("sources"):  # else known once Spark runs
            resolve_against(ingested_sources(probe), against)
        summary = check_contamination(
            cfg, _ctx(cfg), name, version, against=against, command=_command_line(args)
        )
    except NoSourcesError as exc:
        raise UsageError(f"{what}: {exc}") from None
    _emit(args, summary, format_summary(summary))
    return 0


@command("evaluate")
def _cmd_evaluate(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.kinds import BENCHMARK, IMAGES, JUDGMENTS, LEADERBOARD, RESPONSES
    from vlsafety.pipeline import SOURCE_PREFIX, evaluate

    name, version = _ref(args.benchmark, "evaluate --benchmark")
    what = f"evaluate --benchmark {args.benchmark}"
    version = _require(cfg, what, name, version, BENCHMARK)
    _require(cfg, what, "images", None, IMAGES)
    _require_present(
        cfg, what, {"responses": RESPONSES, "judgments": JUDGMENTS, "leaderboard": LEADERBOARD}
    )
    models = [m for m in (args.models or "").split(",") if m] or list(cfg.models.victims)
    lake = _ctx(cfg)
    result = evaluate(cfg, lake, name, version, models, command=_command_line(args))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    import pandas as pd

    board = pd.DataFrame(result["leaderboard"])
    overall = board[board["category"] == "overall"].sort_values("asr")
    print(f"leaderboard for {result['benchmark']} (run {result['run_id']})")
    with pd.option_context("display.width", 200):
        cols = ["model_id", "n", "n_refused", "n_unjudged", "asr", "sr", "n_elite", "e_asr"]
        print(overall[[*cols, "elite_mean"]].to_string(index=False))
    for title, rows in (
        ("ASR by category", board[~board["category"].str.startswith(("overall", SOURCE_PREFIX))]),
        ("ASR by source category", board[board["category"].str.startswith(SOURCE_PREFIX)]),
    ):
        if not rows.empty:
            pivot = rows.pivot_table(index="category", columns="model_id", values="asr")
            pivot.index = [str(c).removeprefix(SOURCE_PREFIX) for c in pivot.index]
            print(f"{title}:")
            with pd.option_context("display.width", 200):
                print(pivot.to_string(float_format=lambda v: f"{v:.3f}"))
    print("  n: evaluated (the ASR denominator); n_unjudged: no valid judgment, not in ASR;")
    print("  n_elite: with an ELITE score (the E-ASR denominator)")
    for k, v in result["quality"].items():
        print(f"  {k}: {v:.4f}")
    return 0


@command("judges")
def _cmd_judges(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.kinds import BENCHMARK, JUDGE_AGREEMENT, JUDGMENTS, RESPONSES
    from vlsafety.pipeline import judge_agreement, read_labels

    name, version = _ref(args.benchmark, "judges --benchmark")
    what = f"judges --benchmark {args.benchmark}"
    probe = _probe(cfg)
    version = _require(cfg, what, name, version, BENCHMARK, probe)
    _require(cfg, what, "responses", None, RESPONSES, probe)
    _require(cfg, what, "judgments", None, JUDGMENTS, probe)
    _require_present(cfg, what, {"judge_agreement": JUDGE_AGREEMENT})
    labels = None
    if args.labels:
        try:  # read and checked before Spark starts
            labels = read_labels(args.labels, probe)
        except ValueError as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
    models = [m for m in (args.models or "").split(",") if m] or None
    lake = _ctx(cfg)
    result = judge_agreement(
        cfg,
        lake,
        name,
        version,
        models=models,
        labels=labels,
        labels_source=args.labels,
        command=_command_line(args),
    )
    from vlsafety.pipeline._judges import format_agreement

    _emit(args, result, format_agreement(result))
    return 0


@command("export")
def _cmd_export(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.kinds import SAMPLES
    from vlsafety.pipeline import export_benchmark

    name, version = _ref(args.table, "export")
    lake = _lake(cfg)
    version = _require(cfg, f"export {args.table}", name, version, SAMPLES, lake)
    meta = export_benchmark(lake, name, version, args.out, fmt=args.format)
    _emit(
        args,
        meta,
        f"exported {meta['rows']} rows and {meta['images']} images of {name}@{meta['version']} to {args.out}",
    )
    return 0


@command("report")
def _cmd_report(args: argparse.Namespace, cfg: Config) -> int:
    from vlsafety.kinds import SAMPLES
    from vlsafety.pipeline import resolve_ref, write_report

    what = f"report {args.ref}"
    probe = _probe(cfg)
    if "@" in args.ref:
        name, version = _ref(args.ref, "report")
        _require(cfg, what, name, version, SAMPLES, probe)
    elif probe is not None:  # a table name, or else an MLflow run id
        try:
            name, version, _ = resolve_ref(cfg, probe, args.ref)
        except ValueError as exc:
            raise UsageError(f"{what}: {exc} (no table {args.ref!r} under {probe.root})") from None
        _require(cfg, what, name, version, SAMPLES, probe)
    path = write_report(cfg, _ctx(cfg), args.ref, args.out)
    _emit(args, {"report": str(path)}, f"report written to {path}")
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

    s = add("gc", "remove files no table version references (left by killed writes and jobs)")
    s.add_argument(
        "--older-than-hours",
        type=float,
        default=24.0,
        help="only folders whose newest file is older than this (default 24)",
    )
    s.add_argument("--dry-run", action="store_true", help="list, remove nothing")
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

    s = add("demo-data", "write the synthetic demo pool (with planted duplicates and broken files)")
    s.add_argument("dir")
    s.add_argument("--n", type=int, default=300)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--json", action="store_true")

    s = add("models", "model utilities")
    msub = s.add_subparsers(
        dest="models_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    mt = msub.add_parser("make-tiny", help="create tiny random-weight models offline")
    mt.add_argument("dir")
    mt.add_argument("--force", action="store_true")
    mt.add_argument("--json", action="store_true")

    s = add("ingest", "read sources into the images and raw_pool tables")
    s.add_argument("--source", action="append", metavar="KIND:PATH", help="repeatable")
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="read the metadata only (no Spark, nothing written) and report per file: "
        "records, categories, unmapped label values, missing images",
    )
    s.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="read only the first N records of each source (a trial over a subset)",
    )
    s.add_argument(
        "--as-benchmark",
        metavar="NAME",
        help="write the sources as benchmark table NAME (validity-checked, not deduplicated; "
        "a re-ingest writes the next version) instead of merging them into raw_pool",
    )
    s.add_argument("--json", action="store_true")

    for name, text in (
        ("preprocess", "filter, deduplicate and categorize raw_pool into pool"),
        ("generate", "generate cross-modal candidates from the pool"),
        ("augment", "augment candidates (text and image mutations)"),
    ):
        s = add(name, text)
        s.add_argument("--json", action="store_true")

    s = add("select", "select a benchmark from a scored table or parquet file")
    s.add_argument(
        "--input", required=True, metavar="SCORED", help="Delta table[@V] or .parquet file"
    )
    s.add_argument(
        "--n-max",
        type=int,
        default=None,
        help="benchmark size (greedy: default select.n_max; elite-filter: cut the kept "
        "pairs to the N best combined ELITE scores, default select.elite.n_max = keep all)",
    )
    s.add_argument("--weights", help="alpha,beta,gamma (default from config)")
    s.add_argument("--mode", choices=["greedy", "elite-filter"])
    s.add_argument("--taxonomy", help="taxonomy name or YAML (fixes K and category ids)")
    s.add_argument("--out", metavar="TABLE", help="write the selection to this Delta table")
    s.add_argument("--json", action="store_true")

    s = add("build", "run the whole pipeline: a new version of the benchmark table")
    s.add_argument("--stages", help="comma-separated subset of the stages (default: all)")
    s.add_argument("--json", action="store_true")

    s = add("update", "replace the worst share of an existing benchmark")
    s.add_argument("--benchmark", required=True, metavar="TABLE[@VERSION]")
    s.add_argument("--replace", type=float, default=0.2, help="share to replace, in [0, 1]")
    s.add_argument(
        "--pool",
        default="scored",
        metavar="TABLE[@VERSION]",
        help="scored pool the replacements come from (default: scored, latest)",
    )
    s.add_argument("--out", metavar="TABLE", help="output table (default: build.benchmark_table)")
    s.add_argument(
        "--where", help="Spark SQL filter on the source rows, e.g. \"source = 'figstep'\""
    )
    s.add_argument("--json", action="store_true")

    s = add(
        "contamination",
        "compare a benchmark version with the ingested public benchmarks (near-copies)",
    )
    s.add_argument("--benchmark", required=True, metavar="TABLE[@VERSION]")
    s.add_argument(
        "--against",
        action="append",
        metavar="SOURCE",
        help="an ingested source (raw_pool.source), repeatable or comma-separated "
        "(default: every ingested public benchmark, not folder/manifest data)",
    )
    s.add_argument("--json", action="store_true")

    s = add("evaluate", "evaluate models on a pinned benchmark version")
    s.add_argument("--benchmark", required=True, metavar="TABLE@VERSION")
    s.add_argument("--models", help="comma-separated model ids (default: models.victims)")
    s.add_argument("--json", action="store_true")

    s = add("judges", "agreement of the judge panel (Fleiss' / Cohen's kappa, ELITE, labels)")
    s.add_argument("--benchmark", required=True, metavar="TABLE[@VERSION]")
    s.add_argument(
        "--models",
        help="comma-separated victim model ids (default: the models of the latest "
        "evaluate run of the version, else models.victims)",
    )
    s.add_argument(
        "--labels",
        metavar="FILE|TABLE",
        help="human labels: parquet/csv/jsonl (or a lake table) with label (0/1) and "
        "request_key, or candidate_id and model_id",
    )
    s.add_argument("--json", action="store_true")

    s = add("export", "write a shareable folder of a benchmark version")
    s.add_argument("table", metavar="TABLE@VERSION")
    s.add_argument("--out", required=True)
    s.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    s.add_argument("--json", action="store_true")

    s = add("report", "one self-contained HTML report of a run or benchmark version")
    s.add_argument("ref", metavar="RUN_ID|TABLE@VERSION")
    s.add_argument("--out", default="report.html")
    s.add_argument("--json", action="store_true")

    return p


def _usage_error(exc: BaseException) -> bool:
    """Exit 2: bad usage or config, or a table the command cannot read (missing, no such
    version, or not of the kind it needs: :mod:`vlsafety.kinds`)."""
    if isinstance(exc, UsageError | ConfigError):
        return True
    # the table errors' modules are loaded whenever one was raised: no import just to look
    kinds, lake = sys.modules.get("vlsafety.kinds"), sys.modules.get("vlsafety.lake")
    return (kinds is not None and isinstance(exc, kinds.TableKindError)) or (
        lake is not None and isinstance(exc, lake.TableNotFoundError)
    )


def _spark_analysis_error(exc: BaseException) -> bool:
    """A Spark ``AnalysisException`` (an unresolved column or table): the data is not what
    the command needs. Commands check their inputs first; this is the last resort."""
    errors = sys.modules.get("pyspark.errors")
    return errors is not None and isinstance(exc, errors.AnalysisException)


def _first_line(exc: BaseException) -> str:
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = message.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = "vlsafety"
    try:
        args = build_parser().parse_args(argv)
        name = args.command
        args.argv = argv
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
    except KeyboardInterrupt:
        print("vlsafety: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _usage_error(exc):
            print(f"vlsafety: error: {_first_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        if _spark_analysis_error(exc):
            print(f"vlsafety: error: {name}: {_first_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, ValueError | KeyError | FileNotFoundError | RuntimeError):
            print(f"vlsafety: error: {_first_line(exc)}", file=sys.stderr)
            return EXIT_FAILURE
        raise


if __name__ == "__main__":
    sys.exit(main())
