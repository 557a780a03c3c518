"""make_tiny: offline, deterministic, small, loadable through the real loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vlsafety.models import ModelSpec, load_model_specs
from vlsafety.models.tiny import TINY_MODELS, make_tiny

REPO = Path(__file__).resolve().parents[2]


def test_layout_size_and_declarations(
    tiny_models_yaml: Path, tiny_specs: dict[str, ModelSpec]
) -> None:
    root = tiny_models_yaml.parent
    for sub in ("clip", "clip768", "llava", "qwen2_vl", "llama", "guard", "classifier"):
        assert (root / sub).is_dir()
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    # the two CLIP text towers' token tables (49408 x 16 floats each) are 6.3 MiB of it
    assert size < 12 * 2**20, f"tiny models take {size / 2**20:.1f} MiB"
    assert set(tiny_specs) == {m["id"] for m in TINY_MODELS}
    for spec in tiny_specs.values():
        if spec.path is not None:
            assert Path(spec.path).exists(), spec.path


def test_committed_tiny_yaml_matches_the_recipe() -> None:
    committed = yaml.safe_load((REPO / "conf/models/tiny.yaml").read_text())
    assert committed["root"] == ".cache/tiny-models"
    assert committed["models"] == TINY_MODELS


def test_reuse_and_determinism(
    tiny_models_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A complete folder from the same recipe is reused without rebuilding.
    before = (tiny_models_yaml.parent / "llama" / "model.safetensors").stat().st_mtime_ns
    assert make_tiny(tiny_models_yaml.parent) == tiny_models_yaml
    after = (tiny_models_yaml.parent / "llama" / "model.safetensors").stat().st_mtime_ns
    assert before == after
    # Same seed: identical weights and checkpoint tensors; another seed: different ones.
    again = make_tiny(tmp_path / "again").parent
    # Another seed changes every model's initial weights; teaching (already checked for
    # determinism by `again`) is left out of that build, as it takes most of its time.
    from vlsafety.models import tiny

    with monkeypatch.context() as m:
        m.setattr(tiny, "_teach_refusals", lambda *args, **kwargs: None)
        other = make_tiny(tmp_path / "other", seed=7).parent
    for sub in ("llava", "qwen2_vl", "llama", "guard", "classifier"):
        a = load_file(tiny_models_yaml.parent / sub / "model.safetensors")
        b = load_file(again / sub / "model.safetensors")
        c = load_file(other / sub / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), sub
        assert any(not torch.equal(a[k], c[k]) for k in a), sub
    for sub in ("clip", "clip768"):
        sd_a = torch.load(tiny_models_yaml.parent / sub / "open_clip_model.pt", weights_only=True)
        sd_b = torch.load(again / sub / "open_clip_model.pt", weights_only=True)
        assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not list(tmp_path.glob(".*.tmp-*"))  # no half-built folders left behind


def test_guard_vocabulary_and_tokenizer(tiny_specs: dict[str, ModelSpec]) -> None:
    from transformers import AutoTokenizer

    guard_dir = tiny_specs["tiny-llama-guard"].path
    tok = AutoTokenizer.from_pretrained(guard_dir)
    for word in ("safe", "unsafe", "0", "1", "5"):
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
    assert tok.padding_side == "left"
    assert tok.chat_template and "BEGIN CONVERSATION" in tok.chat_template


def test_config_of_tiny_folder_loads_as_models_yaml(tiny_models_yaml: Path) -> None:
    specs = load_model_specs(tiny_models_yaml)
    assert specs["tiny-clip"].arch_config is not None
    assert Path(specs["tiny-clip"].arch_config).is_file()


def test_bad_directory_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        make_tiny(blocker / "sub")


def test_victims_answer_by_their_own_trigger_words(tiny_specs: dict[str, ModelSpec]) -> None:
    """The taught panel: each victim refuses exactly when the question holds one of its
    trigger words, through the real backend's greedy generation (image included for the
    VLMs), on natural sentences unlike the training prompts (random word bags).

    make_tiny certified these answers by a first-token margin wide enough to survive
    another machine's float rounding; this checks that loading and generating keep them.
    """
    import io

    from PIL import Image

    from vlsafety.models import ChatMessage, ChatRequest, load_chat_model
    from vlsafety.models.tiny import COMPLY_ANSWER, REFUSAL_ANSWER, check_questions

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 90)).save(buf, format="PNG")
    answers: dict[str, list[str]] = {}
    for model_id, key in (
        ("tiny-llava", "llava"),
        ("tiny-qwen2-vl", "qwen2_vl"),
        ("tiny-llama", "llama"),
    ):
        model = load_chat_model(tiny_specs[model_id])
        image = None if tiny_specs[model_id].text_only else buf.getvalue()
        checks = check_questions(key)
        assert sum(refuse for _, refuse in checks) >= 5  # its own triggers are in there
        reqs = [ChatRequest(messages=(ChatMessage("user", q),), image=image) for q, _ in checks]
        got = [r.text for r in model.generate(reqs)]
        answers[model_id] = got
        for (q, refuse), text in zip(checks, got, strict=True):
            assert text == (REFUSAL_ANSWER if refuse else COMPLY_ANSWER), (model_id, q, text)
    # so the panel disagrees on a sample: what separability is computed from
    assert len({tuple(a) for a in answers.values()}) == 3
