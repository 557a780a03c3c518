from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlsafety.config import Config, ConfigError, flatten, is_secret_key, load_config, parse_override

REPO = Path(__file__).resolve().parents[2]


def test_demo_config_loads_and_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config()
    assert cfg == load_config(REPO / "conf" / "demo.yaml")
    assert cfg.lake.root == "lake"
    assert cfg.tracking.uri.startswith("sqlite:///")
    assert cfg.select.weights == [0.5, 0.3, 0.2]
    assert cfg.score.missing == "reject" == Config().score.missing
    assert load_config(REPO / "conf" / "demo.yaml", ["score.missing=exclude"]).score.missing == (
        "exclude"
    )


def test_overrides_are_typed(tmp_path: Path) -> None:
    cfg = load_config(
        None if False else REPO / "conf" / "demo.yaml",
        [
            "select.n_max=7",
            "select.weights=[0.2,0.3,0.5]",
            "tracking.enabled=false",
            "spark.master=local[2]",
            "spark.conf.spark.x=1",
        ],
    )
    assert cfg.select.n_max == 7
    assert cfg.select.weights == [0.2, 0.3, 0.5]
    assert cfg.tracking.enabled is False
    assert cfg.spark.master == "local[2]"
    assert cfg.spark.conf["spark.x"] == "1"  # str-typed values stay strings


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("nope=1", "nope: unknown key"),
        ("select.nope=1", "select.nope: unknown key"),
        ("select.n_max=abc", "select.n_max: expected an integer"),
        ("select.n_max=1.5", "select.n_max: expected an integer"),
        ("tracking.enabled=maybe", "tracking.enabled: expected true/false"),
        ("select.mode=random", "select.mode: must be one of"),
        ("select.weights=[0.5,0.5,0.5]", "select.weights: must sum to 1"),
        ("select.n_max=0", "select.n_max: must be positive"),
        ("score.missing=drop", "score.missing: must be one of 'reject', 'exclude', got 'drop'"),
        ("select.exclude_contaminated=maybe", "select.exclude_contaminated: expected true/false"),
        ("noequals", "expected KEY=VALUE"),
        ("judges.elite.min_token_mass=1.5", "judges.elite.min_token_mass: must be in [0, 1]"),
        ("judges.elite.min_token_mass=-0.1", "judges.elite.min_token_mass: must be in [0, 1]"),
        ("judges.elite.min_token_mass=high", "judges.elite.min_token_mass: expected a number"),
        ("judges.elite.nope=1", "judges.elite.nope: unknown key"),
    ],
)
def test_bad_overrides_name_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "conf" / "demo.yaml", [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("lake:\n  root: 3\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: lake.root: expected a string"):
        load_config(wrong)
    top = tmp_path / "top.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(top)


def test_secrets_are_not_flattened() -> None:
    data = {"a": {"api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "token": "t", "n": 1}}
    flat = flatten(data)
    assert flat == {"a.api_key_env": "OPENAI_API_KEY", "a.n": 1}
    assert is_secret_key("lake.storage_options")
    cfg = load_config(REPO / "conf" / "demo.yaml", ["lake.storage_options.AWS_ACCESS_KEY_ID=AKIA"])
    assert not any("AKIA" in str(v) for v in flatten(cfg.to_dict()).values())


@given(st.integers(min_value=1, max_value=10**9))
def test_int_override_roundtrip(n: int) -> None:
    key, value = parse_override(f"select.n_max={n}")
    assert (key, value) == (["select", "n_max"], n)
    assert Config().select.n_max == 4000


def test_cluster_example_config_resolves_its_models() -> None:
    from vlsafety.models import load_model_specs

    cfg = load_config(REPO / "conf" / "cluster.example.yaml")
    specs = load_model_specs(REPO / cfg.models.file, root=cfg.models.root)
    used = [cfg.models.embedder, cfg.models.generator, cfg.models.verifier, cfg.models.evaluator]
    for mid in [*used, *cfg.models.victims, *cfg.models.judges]:
        assert mid in specs, mid
    assert len(cfg.models.judges) >= 3
    assert specs[cfg.models.embedder].role == "embedder"
    assert all(specs[j].role == "guard" for j in cfg.models.judges)
    assert cfg.select.n_max == 4000 and cfg.select.weights == [0.5, 0.3, 0.2]


def test_stage_sections_are_validated() -> None:
    cfg = load_config(
        REPO / "conf" / "demo.yaml",
        ["generate.strategies=[modality_conflict]", "preprocess.min_side=32"],
    )
    assert cfg.generate.strategies == ["modality_conflict"]
    assert cfg.preprocess.min_side == 32
    with pytest.raises(ConfigError, match="generate.strategies"):
        load_config(REPO / "conf" / "demo.yaml", ["generate.strategies=[bogus]"])
    with pytest.raises(ConfigError, match="preprocess.nope: unknown key"):
        load_config(REPO / "conf" / "demo.yaml", ["preprocess.nope=1"])


def test_elite_defaults_and_overrides() -> None:
    cfg = Config()
    assert cfg.judges.elite.min_token_mass == 0.5
    e = cfg.select.elite
    assert (e.min_votes, e.single_model_exception, e.n_max) == (2, None, None)
    assert (e.balance.per_category_cap, e.balance.max_source_share) == (None, None)
    # the demo's untrained judge never holds the digits' mass: no fallback there
    assert load_config(REPO / "conf" / "demo.yaml").judges.elite.min_token_mass == 0.0
    cfg = load_config(
        REPO / "conf" / "demo.yaml",
        [
            "judges.elite.min_token_mass=0.25",
            "select.elite.min_votes=0.5",
            "select.elite.single_model_exception=20",
            "select.elite.balance.per_category_cap=300",
            "select.elite.balance.max_source_share=0.6",
            "select.elite.n_max=1000",
        ],
    )
    e = cfg.select.elite
    assert cfg.judges.elite.min_token_mass == 0.25
    assert (e.min_votes, e.single_model_exception, e.n_max) == (0.5, 20.0, 1000)
    assert (e.balance.per_category_cap, e.balance.max_source_share) == (300, 0.6)
    assert isinstance(load_config(None, ["select.elite.min_votes=3"]).select.elite.min_votes, int)
