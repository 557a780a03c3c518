"""Model declarations: ``conf/models/*.yaml`` validated into frozen :class:`ModelSpec` objects.

A models file looks like::

    root: .cache/tiny-models        # optional; relative paths below resolve against it
    models:
      - id: tiny-llava
        role: chat                  # embedder | chat | guard
        backend: hf                 # open_clip | hf | vllm | openai | refusal
        path: llava                 # local dir/file (hf, vllm, open_clip)
        untrained: true

``root`` itself, when relative, resolves against the current working directory (the
repository root, where ``make demo`` runs); without ``root`` relative paths resolve
against the YAML file's folder. Every problem raises :class:`~vlsafety.config.ConfigError`
(a ``ValueError``) naming the file and the offending key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from vlsafety.config import ConfigError, from_mapping

__all__ = [
    "BACKENDS",
    "GUARD_STYLES",
    "ROLES",
    "ModelSpec",
    "Resources",
    "canonical_json",
    "load_model_specs",
    "resolve_panel",
]

Role = Literal["embedder", "chat", "guard"]
Backend = Literal["open_clip", "hf", "vllm", "openai", "refusal"]
GuardStyle = Literal["llama_guard", "classifier", "guard_reasoner", "refusal"]
DType = Literal["auto", "float32", "float16", "bfloat16"]

ROLES: tuple[str, ...] = typing.get_args(Role)
BACKENDS: tuple[str, ...] = typing.get_args(Backend)
GUARD_STYLES: tuple[str, ...] = typing.get_args(GuardStyle)

#: Which backends can play which role.
_ROLE_BACKENDS: dict[str, tuple[str, ...]] = {
    "embedder": ("open_clip",),
    "chat": ("hf", "vllm", "openai"),
    "guard": ("hf", "vllm", "openai", "refusal"),
}

#: Which guard styles each backend implements (the classifier needs the model's logits head).
_STYLE_BACKENDS: dict[str, tuple[str, ...]] = {
    "llama_guard": ("hf", "vllm", "openai"),
    "classifier": ("hf",),
    "guard_reasoner": ("hf", "vllm", "openai"),
    "refusal": ("refusal",),
}

#: Our own knobs (``options:``), per backend and per guard style. Anything else is a typo.
_BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    "open_clip": frozenset({"decode_threads"}),
    "hf": frozenset({"kind"}),
    "vllm": frozenset({"top_logprobs"}),
    "openai": frozenset({"top_logprobs", "backoff_s", "max_backoff_s"}),
    "refusal": frozenset(),
}
_STYLE_OPTIONS: dict[str, frozenset[str]] = {
    "llama_guard": frozenset({"safe_token", "unsafe_token"}),
    "classifier": frozenset({"unsafe_label"}),
    "guard_reasoner": frozenset(),
    "refusal": frozenset({"phrases"}),
}


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings (cache keys).

    Dataclasses become dicts, tuples become lists; NaN/inf and non-JSON types raise
    ``ValueError`` so a key can never silently depend on ``repr``.
    """

    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, Mapping):
            return dict(obj)
        if isinstance(obj, set | frozenset):
            return sorted(obj)
        raise ValueError(f"cannot put a {type(obj).__name__} into a cache key")

    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=default,
        )
    except TypeError as exc:  # e.g. non-string dict keys of an unsortable type
        raise ValueError(f"cannot put value into a cache key: {exc}") from exc


@dataclass(frozen=True)
class Resources:
    """What one inference task needs (NeMo-Curator style). ``gpus`` may be fractional.

    ``tasks`` is how many Spark tasks a model stage runs in (None: two per GPU slot on a
    GPU cluster, one per ``cpus`` cores otherwise; see :func:`vlsafety.executor.task_count`).
    """

    cpus: int = 1
    gpus: float = 0.0
    tasks: int | None = None

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError(f"resources.cpus: must be >= 1, got {self.cpus}")
        if self.tasks is not None and self.tasks < 1:
            raise ValueError(f"resources.tasks: must be >= 1, got {self.tasks}")
        if self.gpus < 0:
            raise ValueError(f"resources.gpus: must be >= 0, got {self.gpus}")
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"resources.gpus: above 1 must be a whole number, got {self.gpus}")


@dataclass(frozen=True)
class ModelSpec:
    """One declared model. Validated on construction; see the module docstring for YAML.

    Fields that change a model's answers enter :meth:`fingerprint`, hence every cache key
    (:func:`vlsafety.inference.request_key`); operational fields (device, batch size,
    timeouts, resources, the absolute location of weights) do not, so moving weights or
    resizing a cluster keeps the cache.

    Attributes:
        id: unique name used in panels and result tables.
        role: ``embedder`` | ``chat`` | ``guard``.
        backend: ``open_clip`` | ``hf`` | ``vllm`` | ``openai`` | ``refusal``.
        path: weights (dir or checkpoint file), resolved to an absolute path on load.
        endpoint: base URL of an OpenAI-compatible server (``http://host:8000/v1``).
        model_name: model name sent to the endpoint (``openai``) .
        arch: open_clip architecture name (``ViT-L-14``).
        arch_config: open_clip model-config JSON to register before creating ``arch``.
        pretrained: open_clip pretrained tag, used when ``path`` is not given.
        guard_style: ``llama_guard`` | ``classifier`` | ``guard_reasoner`` | ``refusal``.
        dtype / device: precision and torch device (``cpu``, ``cuda``, ``cuda:1``, ``auto``).
        batch_size: requests per model call.
        max_tokens / temperature / top_p / seed: default sampling parameters.
        timeout / retries / concurrency: per-request seconds, retry count on transient
            errors, parallel requests (``openai``).
        parse_retries: how often an unparsable judge answer is asked again.
        api_key_env: NAME of the environment variable holding the API key (never the key).
        untrained: random-weight test model; downstream stages must not trust its outputs.
        text_only: the model takes no image (e.g. Llama-Guard-3-8B as a judge): stages
            send it the text of a sample only.
        resources: cpus/gpus per inference task (Spark stage-level scheduling).
        options: our own per-backend knobs (validated, see ``_BACKEND_OPTIONS``).
        extra: keyword arguments passed through to the backend's constructor.
        declared_path: ``path`` as written in the YAML (enters the fingerprint).
        source: the YAML file this spec came from (for error messages).
    """

    id: str
    role: Role
    backend: Backend
    path: str | None = None
    endpoint: str | None = None
    model_name: str | None = None
    arch: str | None = None
    arch_config: str | None = None
    pretrained: str | None = None
    guard_style: GuardStyle | None = None
    dtype: DType = "float32"
    device: str = "cpu"
    batch_size: int = 8
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    timeout: float = 60.0
    retries: int = 3
    concurrency: int = 4
    parse_retries: int = 2
    api_key_env: str | None = None
    untrained: bool = False
    text_only: bool = False
    resources: Resources = field(default_factory=Resources)
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    declared_path: str | None = field(default=None, compare=False)
    source: str = field(default="<code>", compare=False)

    def __post_init__(self) -> None:
        def fail(key: str, msg: str) -> None:
            raise ConfigError(f"{self.source}: model {self.id!r}: {key}: {msg}")

        if not self.id or not isinstance(self.id, str) or self.id.strip() != self.id:
            fail("id", f"must be a non-empty string without surrounding spaces, got {self.id!r}")
        if self.role not in ROLES:
            fail("role", f"must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.backend not in BACKENDS:
            fail("backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend not in _ROLE_BACKENDS[self.role]:
            allowed = ", ".join(_ROLE_BACKENDS[self.role])
            fail("backend", f"a {self.role} runs on {allowed}, not {self.backend!r}")
        style = self.guard_style
        if self.role == "guard":
            if self.backend == "refusal":
                if style not in (None, "refusal"):
                    fail("guard_style", f"the refusal backend has style 'refusal', not {style!r}")
                object.__setattr__(self, "guard_style", "refusal")
                style = "refusal"
            elif style is None:
                fail("guard_style", f"a guard needs one of {', '.join(GUARD_STYLES)}")
            elif style not in GUARD_STYLES:
                fail("guard_style", f"must be one of {', '.join(GUARD_STYLES)}, got {style!r}")
            elif self.backend not in _STYLE_BACKENDS[style]:
                ok = ", ".join(_STYLE_BACKENDS[style])
                fail("guard_style", f"{style!r} runs on {ok}, not {self.backend!r}")
        elif style is not None:
            fail("guard_style", f"only guards have a guard_style (this is a {self.role})")
        if self.backend in ("hf", "vllm") and not self.path:
            fail("path", f"the {self.backend} backend needs a local weights path")
        if self.backend == "open_clip":
            if not self.arch:
                fail("arch", "the open_clip backend needs an architecture name (e.g. ViT-L-14)")
            if self.path and self.pretrained:
                fail(
                    "pretrained", "give either path (a checkpoint) or pretrained (a tag), not both"
                )
            if not self.path and not self.pretrained and not self.untrained:
                fail("path", "no weights: give path or pretrained, or mark untrained: true")
        elif self.arch_config or self.pretrained:
            fail("arch_config" if self.arch_config else "pretrained", "only for open_clip")
        if self.backend == "openai":
            if not self.endpoint:
                fail("endpoint", "the openai backend needs an endpoint URL")
            if not self.model_name:
                fail("model_name", "the openai backend needs the served model name")
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                fail("endpoint", f"must be an http(s) URL, got {self.endpoint!r}")
            if parts.username or parts.password:
                # A key in the URL would be logged with it; keys come from api_key_env only.
                fail("endpoint", "must not contain credentials; name an env var in api_key_env")
        if self.api_key_env is not None and (
            not self.api_key_env or not self.api_key_env.replace("_", "").isalnum()
        ):
            fail("api_key_env", "must be an environment variable NAME such as OPENAI_API_KEY")
        for key, low in (("batch_size", 1), ("max_tokens", 1), ("concurrency", 1)):
            if getattr(self, key) < low:
                fail(key, f"must be >= {low}, got {getattr(self, key)}")
        for key in ("retries", "parse_retries"):
            if getattr(self, key) < 0:
                fail(key, f"must be >= 0, got {getattr(self, key)}")
        if self.temperature < 0:
            fail("temperature", f"must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            fail("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.timeout <= 0:
            fail("timeout", f"must be > 0, got {self.timeout}")
        if not (
            self.device in ("cpu", "cuda", "auto", "mps")
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            fail("device", f"must be cpu, cuda, cuda:N, mps or auto, got {self.device!r}")
        allowed_opts = _BACKEND_OPTIONS[self.backend] | (
            _STYLE_OPTIONS[style] if style is not None else frozenset()
        )
        for key in self.options:
            if key not in allowed_opts:
                known = ", ".join(sorted(allowed_opts)) or "none"
                fail(f"options.{key}", f"unknown option (known here: {known})")
        if self.backend == "hf" and self.options.get("kind") not in (None, "vlm", "text"):
            fail("options.kind", f"must be 'vlm' or 'text', got {self.options['kind']!r}")
        if "decode_threads" in self.options:
            n = self.options["decode_threads"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                fail("options.decode_threads", f"must be a positive integer, got {n!r}")
        if "top_logprobs" in self.options:
            k = self.options["top_logprobs"]
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 20:
                fail("options.top_logprobs", f"must be an integer in 1..20, got {k!r}")
        phrases = self.options.get("phrases")
        if phrases is not None and (
            not isinstance(phrases, list)
            or not phrases
            or not all(isinstance(p, str) and p.strip() for p in phrases)
        ):
            fail("options.phrases", "must be a non-empty list of non-empty strings")
        if self.declared_path is None:
            object.__setattr__(self, "declared_path", self.path)

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        where = self.endpoint or self.path or self.pretrained or "-"
        return (
            f"ModelSpec(id={self.id!r}, role={self.role!r}, backend={self.backend!r}, at={where!r})"
        )

    def answer_fields(self) -> dict[str, Any]:
        """The fields that determine this model's answers (what :meth:`fingerprint` hashes)."""
        return {
            "id": self.id,
            "role": self.role,
            "backend": self.backend,
            "path": self.declared_path,
            "model_name": self.model_name,
            "arch": self.arch,
            "pretrained": self.pretrained,
            "guard_style": self.guard_style,
            "dtype": self.dtype,
            "untrained": self.untrained,
            "text_only": self.text_only,
            "options": self.options,
            "extra": self.extra,
        }

    def fingerprint(self) -> str:
        """sha256 (hex) over :meth:`answer_fields` as canonical JSON."""
        return hashlib.sha256(canonical_json(self.answer_fields()).encode()).hexdigest()

    def instance_key(self) -> str:
        """sha256 over every field: one loaded model per distinct spec in a worker."""
        data = dataclasses.asdict(self)
        data.pop("source")
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()


_SPEC_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)} - {"declared_path", "source"}


def _resolve(value: str, base: Path) -> str:
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    return str(p if p.is_absolute() else (base / p).resolve())


def load_model_specs(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> dict[str, ModelSpec]:
    """Read a models YAML into ``{id: ModelSpec}`` (in file order).

    ``root`` overrides the file's ``root:`` key. Relative ``path`` and ``arch_config``
    values resolve against the root (see the module docstring).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: models file not found")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{file}: not valid YAML ({first})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping with a 'models' list")
    unknown = set(data) - {"root", "models"}
    if unknown:
        raise ConfigError(f"{file}: {sorted(unknown)[0]}: unknown key (use root, models)")
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{file}: models: must be a non-empty list")
    root_value = root if root is not None else data.get("root")
    if root_value is None:
        base = file.parent.resolve()
    elif isinstance(root_value, str | os.PathLike):
        base = Path(os.path.expandvars(os.path.expanduser(os.fspath(root_value)))).resolve()
    else:
        raise ConfigError(f"{file}: root: expected a string, got {root_value!r}")
    specs: dict[str, ModelSpec] = {}
    for i, entry in enumerate(entries):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{file}: {where}: expected a mapping, got {type(entry).__name__}")
        if "id" in entry:
            where = f"models[{i}] ({entry['id']})"
        for key in entry:
            if key not in _SPEC_FIELDS:
                raise ConfigError(f"{file}: {where}.{key}: unknown key")
        for key in ("id", "role", "backend"):
            if key not in entry:
                raise ConfigError(f"{file}: {where}.{key}: missing")
        fields = dict(entry)
        declared = fields.get("path")
        for key in ("path", "arch_config"):
            if isinstance(fields.get(key), str):
                fields[key] = _resolve(fields[key], base)
        try:
            spec = from_mapping(ModelSpec, {**fields, "source": str(file)}, prefix=where)
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(str(file)) else f"{file}: {msg}") from None
        spec = dataclasses.replace(spec, declared_path=declared) if declared else spec
        if spec.id in specs:
            raise ConfigError(f"{file}: {where}.id: duplicate model id {spec.id!r}")
        specs[spec.id] = spec
    return specs


def resolve_panel(specs: Mapping[str, ModelSpec], ids: Sequence[str]) -> list[ModelSpec]:
    """The specs for ``ids`` in order; an unknown or repeated id is a ``ValueError``."""
    if isinstance(ids, str):
        raise ValueError(f"a panel is a list of model ids, got the string {ids!r}")
    seen: set[str] = set()
    out: list[ModelSpec] = []
    for model_id in ids:
        if model_id not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise ValueError(f"unknown model id {model_id!r} in panel (declared: {known})")
        if model_id in seen:
            raise ValueError(f"model id {model_id!r} appears twice in the panel")
        seen.add(model_id)
        out.append(specs[model_id])
    return out
