"""Typed configuration: YAML files in ``conf/`` validated into frozen dataclasses.

A config is a tree of dataclasses. ``load_config`` reads a YAML file, applies
``--set a.b=c`` overrides (values parsed as YAML scalars, then checked against the
field's declared type) and validates every key. Any problem raises
:class:`ConfigError` whose message is one line naming the file or the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "EliteBalanceConfig",
    "EliteJudgeConfig",
    "EliteSelectConfig",
    "JudgesConfig",
    "LakeConfig",
    "ModelsConfig",
    "ScoreConfig",
    "SelectConfig",
    "SparkConfig",
    "TrackingConfig",
    "DEFAULT_CONF",
    "from_mapping",
    "load_config",
    "parse_override",
]

DEFAULT_CONF = Path("conf/demo.yaml")

#: Config keys whose values are never logged or printed (matched on the last key segment).
SECRET_MARKERS = (
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "credential",
    "storage_options",
)


class ConfigError(ValueError):
    """A config file, key or value is wrong. The message is one line naming it."""


@dataclass(frozen=True)
class LakeConfig:
    """Where the Delta tables live: a local folder or a cloud/DBFS path.

    ``shared: true`` declares a local-looking root (a plain path or ``file://``) to be a
    mount every executor sees (NFS and the like); without it a non-local Spark master
    with a local root is refused, since executors would stage files the driver cannot see.
    """

    root: str = "lake"
    storage_options: dict[str, str] = field(default_factory=dict)
    shared: bool = False


@dataclass(frozen=True)
class SparkConfig:
    """Spark session settings. ``local[*]`` by default; a cluster master otherwise."""

    master: str = "local[*]"
    app_name: str = "vlsafety"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    arrow_batch_size: int = 256
    progress_bar: bool = True
    conf: dict[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        """``local`` / ``local[...]``; ``local-cluster[...]`` is a real (if small) cluster."""
        return self.master == "local" or self.master.startswith("local[")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: the tracking URI (sqlite by default) and experiment name."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "vlsafety"


@dataclass(frozen=True)
class ModelsConfig:
    """Which declared models play which role (ids from the models YAML)."""

    file: str = "conf/models/tiny.yaml"
    root: str = ".cache/tiny-models"
    embedder: str | None = None
    generator: str | None = None
    verifier: str | None = None
    victims: list[str] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)
    evaluator: str | None = None


@dataclass(frozen=True)
class EliteJudgeConfig:
    """The ELITE evaluator (``models.evaluator``).

    ``min_token_mass``: in log-probability mode (the ``hf`` backend) an item whose allowed
    answer tokens ("0".."5" ...) hold less than this share of the next-token probability
    for any criterion is judged by parsed generation (JSON) instead; the judge stage
    counts these as ``elite_fallback``. 0 never falls back (the demo's untrained tiny
    models spread their probability over the whole vocabulary).
    """

    min_token_mass: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_token_mass <= 1.0:
            raise ConfigError(
                f"judges.elite.min_token_mass: must be in [0, 1], got {self.min_token_mass}"
            )


@dataclass(frozen=True)
class JudgesConfig:
    """Rubric judges' settings (the guards themselves are ``models.judges``)."""

    elite: EliteJudgeConfig = field(default_factory=EliteJudgeConfig)


@dataclass(frozen=True)
class EliteBalanceConfig:
    """ELITE §3.4 "balancing the taxonomy" (both off by default; the paper gives no numbers).

    ``per_category_cap``: at most this many pairs per category, the lowest combined ELITE
    scores dropped first. ``max_source_share``: within a category no source (benchmark)
    holds more than this share of the pairs, the over-represented sources' lowest combined
    scores dropped first (needs a ``source`` column; a source keeps at least one pair).
    """

    per_category_cap: int | None = None
    max_source_share: float | None = None

    def __post_init__(self) -> None:
        if self.per_category_cap is not None and self.per_category_cap < 1:
            raise ConfigError(
                "select.elite.balance.per_category_cap: must be >= 1 or null, "
                f"got {self.per_category_cap}"
            )
        if self.max_source_share is not None and not 0.0 < self.max_source_share <= 1.0:
            raise ConfigError(
                "select.elite.balance.max_source_share: must be in (0, 1] or null, "
                f"got {self.max_source_share}"
            )


@dataclass(frozen=True)
class EliteSelectConfig:
    """ELITE filter mode (``select.mode: elite-filter``, ELITE §3.4); ``select.threshold``
    is the vote threshold.

    ``min_votes``: panel models that must score a pair ``>= threshold``: a count (``2``, the
    paper's 2 of 3) or a share of the panel (a number in ``(0, 1]``: ``0.5`` is at least
    half, ``1.0`` all). ``single_model_exception``: a pair with one vote is kept anyway when
    that model's score reaches this value (``>= select.threshold``; null = off: the paper
    keeps "sufficiently harmful" single-model pairs but gives no number). ``n_max``: null
    keeps every pair the filter keeps (the paper's rule); a number keeps the highest
    combined ELITE scores up to it.
    """

    min_votes: int | float = 2
    single_model_exception: float | None = None
    balance: EliteBalanceConfig = field(default_factory=EliteBalanceConfig)
    n_max: int | None = None

    def __post_init__(self) -> None:
        v = self.min_votes
        if isinstance(v, int) and v < 1:
            raise ConfigError(f"select.elite.min_votes: a count must be >= 1, got {v}")
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ConfigError(
                f"select.elite.min_votes: a share must be in (0, 1] (or give a count), got {v}"
            )
        if self.n_max is not None and self.n_max < 1:
            raise ConfigError(f"select.elite.n_max: must be positive or null, got {self.n_max}")


@dataclass(frozen=True)
class SelectConfig:
    """Selection agent (VLSafetyBencher Algorithm 1; ELITE filter mode, see ``elite``)."""

    n_max: int = 4000
    weights: list[float] = field(default_factory=lambda: [0.5, 0.3, 0.2])
    mode: Literal["greedy", "elite-filter"] = "greedy"
    threshold: float = 10.0
    elite: EliteSelectConfig = field(default_factory=EliteSelectConfig)
    taxonomy: str = "vlsb"
    #: numpy: the blocked CPU engine; cpu/cuda: the blocked torch engine on that device;
    #: auto: the fastest for the size — cuda from 2**26 embedding entries (n × d) when
    #: present, else numpy (vlsafety.selection.auto_device). All pick identically; see
    #: bench/selection.py for the figures.
    device: Literal["auto", "numpy", "cpu", "cuda"] = "numpy"
    #: leave out samples that match an ingested public benchmark (``vlsafety
    #: contamination``'s check, thresholds from ``preprocess.*``) before selecting: each
    #: one a ``rejects`` row with reason ``contaminated:<source>``, counted as filtered.
    exclude_contaminated: bool = False

    @property
    def engine(self) -> str | None:
        return None if self.device == "auto" else self.device

    def __post_init__(self) -> None:
        if self.n_max <= 0:
            raise ConfigError(f"select.n_max: must be positive, got {self.n_max}")
        if not isinstance(self.exclude_contaminated, bool):
            raise ConfigError(
                "select.exclude_contaminated: must be true or false, "
                f"got {self.exclude_contaminated!r}"
            )
        if len(self.weights) != 3 or any(w < 0 for w in self.weights):
            raise ConfigError(
                "select.weights: need three non-negative weights (alpha, beta, gamma)"
            )
        if abs(sum(self.weights) - 1.0) > 1e-9:
            raise ConfigError(f"select.weights: must sum to 1, got {sum(self.weights)}")
        exception = self.elite.single_model_exception
        if exception is not None and not self.threshold <= exception <= 25.0:
            raise ConfigError(
                "select.elite.single_model_exception: must lie in [select.threshold "
                f"({self.threshold:g}), 25] or be null, got {exception}"
            )


@dataclass(frozen=True)
class BuildConfig:
    """The build job: where the raw pool comes from and how responses count as harmful."""

    sources: list[str] = field(default_factory=list)
    benchmark_table: str = "benchmark"
    harmful_threshold: float = 0.5
    heldout_victims: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.harmful_threshold <= 1.0:
            raise ConfigError(
                f"build.harmful_threshold: must be in [0, 1], got {self.harmful_threshold}"
            )


@dataclass(frozen=True)
class ScoreConfig:
    """The score stage and the evaluate job: what a missing panel cell does.

    ``missing``: ``reject`` (default) — a candidate whose judge × model table lacks a cell
    (no current response, no valid judgment) is not scored and gets a reason row in
    ``rejects``, and an unjudged (sample, model) pair of an evaluation gets one too;
    ``exclude`` — missing cells leave the denominators of C_harm, p_h and ASR and are
    counted (``n_missing`` in ``scored``, ``n_unjudged`` on the leaderboard).
    """

    missing: Literal["reject", "exclude"] = "reject"

    def __post_init__(self) -> None:
        if self.missing not in ("reject", "exclude"):
            raise ConfigError(
                f"score.missing: must be one of 'reject', 'exclude', got {self.missing!r}"
            )


#: Stage sections typed by the stages' own option dataclasses, imported on first use
#: (the stage packages import this module, so a top-level import would be circular).
_STAGE_SECTIONS: dict[str, str] = {
    "ingest": "vlsafety.ingest._options:IngestOptions",
    "preprocess": "vlsafety.preprocess._options:PreprocessOptions",
    "generate": "vlsafety.generate._options:GenerateOptions",
    "augment": "vlsafety.augment._options:AugmentOptions",
}


def _section_class(name: str) -> type:
    import importlib

    module, _, cls = _STAGE_SECTIONS[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def _section_default(name: str) -> Any:
    return field(default_factory=lambda: _section_class(name)())


@dataclass(frozen=True)
class Config:
    """The whole vlsafety configuration (``conf/demo.yaml`` is the embedded default).

    Stage sections (``ingest``, ``preprocess``, ``generate``, ``augment``) are the stages'
    own option dataclasses, validated the same way.
    """

    lake: LakeConfig = field(default_factory=LakeConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    ingest: Any = _section_default("ingest")
    preprocess: Any = _section_default("preprocess")
    generate: Any = _section_default("generate")
    augment: Any = _section_default("augment")
    select: SelectConfig = field(default_factory=SelectConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (converted where lossless)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (list, Sequence):
        (item,) = get_args(tp) or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        kt, vt = get_args(tp) or (Any, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, naming the dotted key of any error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        if raw_key not in names:
            raise ConfigError(f"{key}: unknown key")
        tp = hints[raw_key]
        if cls is Config and raw_key in _STAGE_SECTIONS:
            tp = _section_class(raw_key)
        kwargs[raw_key] = _coerce(value, tp, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from exc


def _resolve_key(key: str) -> tuple[list[str], Any]:
    """Split dotted ``key`` into its path in :class:`Config` and the declared type there.

    Below a ``dict`` field the rest of the key is one entry name, dots included, so
    ``spark.conf.spark.sql.shuffle.partitions=4`` sets one Spark conf entry.
    """
    tp: Any = Config
    parts = key.split(".")
    path: list[str] = []
    for i, part in enumerate(parts):
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: unknown key")
            tp = _section_class(part) if tp is Config and part in _STAGE_SECTIONS else hints[part]
            path.append(part)
        elif get_origin(tp) in (dict, Mapping):
            path.append(".".join(parts[i:]))
            return path, (get_args(tp) or (Any, Any))[1]
        else:
            raise ConfigError(f"{key}: unknown key")
    return path, tp


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=c`` into (key path, typed value). Strings stay strings for str fields."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set {text}: bad key")
    path, tp = _resolve_key(key)
    if tp is str or (get_origin(tp) in (typing.Union, types.UnionType) and str in get_args(tp)):
        if raw.lower() in ("null", "none", "~") and type(None) in get_args(tp):
            return path, None
        return path, raw
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}") from exc
    return path, value


def _apply(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a mapping")
        node = child
    node[path[-1]] = value


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """Load ``path`` (default ``conf/demo.yaml`` when it exists), apply overrides, validate."""
    data: dict[str, Any] = {}
    conf_path = Path(path) if path is not None else DEFAULT_CONF
    if path is not None or conf_path.exists():
        if not conf_path.is_file():
            raise ConfigError(f"{conf_path}: config file not found")
        try:
            loaded = yaml.safe_load(conf_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{conf_path}: not valid YAML ({first})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{conf_path}: top level must be a mapping")
        data = loaded
    for text in overrides:
        key_path, value = parse_override(text)
        _apply(data, key_path, value)
    try:
        return from_mapping(Config, data)
    except ConfigError as exc:
        where = f"{conf_path}: " if (path is not None or conf_path.exists()) else ""
        raise ConfigError(f"{where}{exc}") from None


def is_secret_key(key: str) -> bool:
    """True when a (dotted) config key names a secret that must never be logged."""
    last = key.rsplit(".", 1)[-1].lower()
    return any(marker in last for marker in SECRET_MARKERS) and not last.endswith("_env")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys, dropping secrets (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if is_secret_key(key):
            continue
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
