"""ModelSpec validation, models-YAML loading, path resolution, panels and fingerprints."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from vlsafety.config import ConfigError
from vlsafety.models import ModelSpec, Resources, load_model_specs, resolve_panel
from vlsafety.models.tiny import TINY_MODELS

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object, name: str = "models.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def one(**fields: object) -> dict[str, object]:
    return {"models": [{"id": "m", "role": "chat", "backend": "hf", "path": "w", **fields}]}


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, one(batchsize=4))
    with pytest.raises(
        ConfigError, match=r"models\.yaml.*models\[0\] \(m\)\.batchsize: unknown key"
    ):
        load_model_specs(path)


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, one(batch_size="eight"))
    with pytest.raises(ConfigError, match=r"models\.yaml.*batch_size: expected an integer"):
        load_model_specs(path)
    path = write(tmp_path, one(untrained="yes"))
    with pytest.raises(ConfigError, match="untrained: expected true/false"):
        load_model_specs(path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"role": "judge"}, "role: must be one of"),
        ({"backend": "open_clip"}, "backend: a chat runs on hf, vllm, openai"),
        ({"role": "guard"}, "guard_style: a guard needs one of"),
        ({"guard_style": "llama_guard"}, "only guards have a guard_style"),
        ({"batch_size": 0}, "batch_size: must be >= 1"),
        ({"top_p": 0}, r"top_p: must be in \(0, 1\]"),
        ({"device": "gpu"}, "device: must be cpu, cuda"),
        ({"options": {"colour": 1}}, "options.colour: unknown option"),
        ({"resources": {"gpus": -1}}, "resources.gpus: must be >= 0"),
        ({"api_key_env": "sk-live key"}, "api_key_env: must be an environment variable NAME"),
        ({"role": "guard", "guard_style": "classifier", "backend": "vllm"}, "runs on hf"),
    ],
)
def test_invalid_fields_raise_naming_the_key(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model_specs(write(tmp_path, one(**fields)))


def test_missing_required_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\[0\] \(a\)\.backend: missing"):
        load_model_specs(write(tmp_path, {"models": [{"id": "a", "role": "chat"}]}))
    dup = {"models": [one()["models"][0], one()["models"][0]]}  # type: ignore[index]
    with pytest.raises(ConfigError, match="duplicate model id 'm'"):
        load_model_specs(write(tmp_path, dup))
    with pytest.raises(ConfigError, match="models: must be a non-empty list"):
        load_model_specs(write(tmp_path, {"models": []}))
    with pytest.raises(ConfigError, match="colour: unknown key"):
        load_model_specs(write(tmp_path, {"colour": 1, **one()}))
    with pytest.raises(ConfigError, match="models file not found"):
        load_model_specs(tmp_path / "absent.yaml")


def test_openai_needs_endpoint_and_no_credentials_in_url(tmp_path: Path) -> None:
    base = {"id": "o", "role": "chat", "backend": "openai", "model_name": "gpt"}
    with pytest.raises(ConfigError, match="endpoint: the openai backend needs"):
        load_model_specs(write(tmp_path, {"models": [base]}))
    bad = {**base, "endpoint": "https://user:sk-123@api.example/v1"}
    with pytest.raises(ConfigError, match="must not contain credentials") as info:
        load_model_specs(write(tmp_path, {"models": [bad]}))
    assert "sk-123" not in str(info.value)


def test_open_clip_needs_weights_unless_untrained(tmp_path: Path) -> None:
    base = {"id": "c", "role": "embedder", "backend": "open_clip", "arch": "ViT-L-14"}
    with pytest.raises(ConfigError, match="no weights"):
        load_model_specs(write(tmp_path, {"models": [base]}))
    spec = load_model_specs(write(tmp_path, {"models": [{**base, "untrained": True}]}))["c"]
    assert spec.path is None and spec.untrained
    with pytest.raises(ConfigError, match="not both"):
        load_model_specs(
            write(tmp_path, {"models": [{**base, "path": "x", "pretrained": "openai"}]})
        )


def test_relative_paths_resolve_against_yaml_folder_then_root(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    spec = load_model_specs(write(sub, one(path="weights/llava")))["m"]
    assert spec.path == str((sub / "weights/llava").resolve())
    assert spec.declared_path == "weights/llava"
    spec = load_model_specs(write(sub, {"root": str(tmp_path / "r"), **one(path="llava")}))["m"]
    assert spec.path == str(tmp_path / "r" / "llava")
    spec = load_model_specs(write(sub, {"root": "ignored", **one(path="llava")}), root=tmp_path)[
        "m"
    ]
    assert spec.path == str(tmp_path / "llava")
    spec = load_model_specs(write(sub, one(path=str(tmp_path / "abs"))))["m"]
    assert spec.path == str(tmp_path / "abs")


def test_relative_root_is_relative_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "conf" / "models"
    sub.mkdir(parents=True)
    spec = load_model_specs(write(sub, {"root": ".cache/tiny", **one(path="llava")}))["m"]
    assert spec.path == str(tmp_path / ".cache" / "tiny" / "llava")


def test_refusal_backend_implies_style_and_resources_parse(tmp_path: Path) -> None:
    data = {
        "models": [
            {"id": "r", "role": "guard", "backend": "refusal", "options": {"phrases": ["no way"]}},
            {
                "id": "g",
                "role": "guard",
                "backend": "hf",
                "guard_style": "llama_guard",
                "path": "g",
                "resources": {"cpus": 4, "gpus": 0.5},
            },
        ]
    }
    specs = load_model_specs(write(tmp_path, data))
    assert specs["r"].guard_style == "refusal"
    assert specs["g"].resources == Resources(cpus=4, gpus=0.5)
    with pytest.raises(ConfigError, match="options.phrases"):
        load_model_specs(
            write(tmp_path, {"models": [{**data["models"][0], "options": {"phrases": []}}]})
        )


def test_fingerprint_tracks_answer_fields_only(tmp_path: Path) -> None:
    spec = load_model_specs(write(tmp_path, one()))["m"]
    moved = dataclasses.replace(spec, path="/elsewhere", device="cuda", batch_size=64, timeout=9.0)
    assert moved.fingerprint() == spec.fingerprint()
    assert moved.instance_key() != spec.instance_key()
    for change in ({"dtype": "bfloat16"}, {"extra": {"revision": "x"}}, {"id": "m2"}):
        assert dataclasses.replace(spec, **change).fingerprint() != spec.fingerprint()
    assert hash(spec) == hash(dataclasses.replace(spec))
    assert "m" in repr(spec) and "hf" in repr(spec)


def test_resolve_panel(tmp_path: Path) -> None:
    specs = {s["id"]: ModelSpec(**{**s, "path": "x"} if "path" in s else s) for s in TINY_MODELS}
    panel = resolve_panel(specs, ["tiny-llava", "tiny-llama"])
    assert [s.id for s in panel] == ["tiny-llava", "tiny-llama"]
    with pytest.raises(ValueError, match="unknown model id 'gpt-5' in panel"):
        resolve_panel(specs, ["tiny-llava", "gpt-5"])
    with pytest.raises(ValueError, match="appears twice"):
        resolve_panel(specs, ["tiny-llava", "tiny-llava"])
    with pytest.raises(ValueError, match="list of model ids"):
        resolve_panel(specs, "tiny-llava")


def test_committed_model_files_load() -> None:
    tiny = load_model_specs(REPO / "conf/models/tiny.yaml", root="/tmp/x")
    assert all(s.untrained for s in tiny.values() if s.backend != "refusal")
    cluster = load_model_specs(REPO / "conf/models/cluster.example.yaml")
    judges = [s for s in cluster.values() if s.role == "guard" and s.backend != "refusal"]
    assert {s.guard_style for s in judges} == {"llama_guard", "guard_reasoner"}
    assert len(judges) >= 3  # VLSafetyBencher: N_J >= 3
    assert cluster["gpt-4o-elite"].api_key_env == "OPENAI_API_KEY"
    assert not any(s.untrained for s in cluster.values())
    assert os.path.isabs(cluster["clip-vit-l-14"].path or "")
