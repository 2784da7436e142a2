"""HiCA on one open_clip model's towers (the paper profile's ``hica.clip``), on a tiny registered config loaded
from a local weights file: untrained, it is CLIP's own zero-shot classifier; it trains; loading errors name the
file."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from tiny_clip import register

from medrepro.errors import WeightsError
from medrepro.hica.runs import build_hica
from medrepro.models.clip_towers import ClipSentenceEncoder, clip_normalization, load_clip
from medrepro.models.hica import CAPTION

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "medrepro-tiny-clip"
TEMPLATES = ["An image showing normal.", "An image showing benign.", "An image showing malignant."]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return str(register(NAME, tmp_path_factory.mktemp("clip")))


def _desc(weights: str) -> dict:
    return {"builder": "hica", "modalities": ["us"], "image_size": 48, "num_classes": 3, "tower": None,
            "clip": {"model": NAME, "weights": weights}, "text_dim": 16, "embed_dim": 16,
            "loss": {"tau": 0.07, "lambda_local": 0.5, "lambda_cross": 0.5, "margin": 0.2, "use_global": True},
            "rois": {"mode": "grid", "k": 4, "z": 2.5, "min_area": 2, "pad": 1}, "roi_size": 16}


def test_untrained_hica_on_clip_towers_is_clips_zero_shot(weights):
    text = ClipSentenceEncoder(load_clip(NAME, weights), NAME)
    class_text = text.sentences(TEMPLATES)
    model = build_hica(_desc(weights), class_text).eval()
    grey = torch.rand(5, 1, 48, 48, generator=torch.Generator().manual_seed(0))  # grey, not the tower's 32 px
    with torch.no_grad():
        logits = model({"us": grey})
        ref = open_clip.create_model(NAME, pretrained_text=False).eval()
        ref.load_state_dict(torch.load(weights))
        x = F.interpolate(grey.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", antialias=True)
        img = F.normalize(ref.encode_image(x), dim=-1)
        txt = F.normalize(ref.encode_text(open_clip.get_tokenizer(NAME)(TEMPLATES)), dim=-1)
    torch.testing.assert_close(logits * 0.07, img @ txt.T, atol=1e-5, rtol=1e-5)
    assert np.array_equal(logits.argmax(1).numpy(), (img @ txt.T).argmax(1).numpy())
    assert clip_normalization(ref) == (tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD))


def test_clip_towers_train_with_the_hica_loss(weights):
    text = ClipSentenceEncoder(load_clip(NAME, weights), NAME)
    model = build_hica(_desc(weights), text.sentences(TEMPLATES)).train()
    batch = {"us": torch.rand(4, 1, 48, 48), CAPTION: text.sentences(["a dark mass"] * 4)}
    loss = model.training_loss(batch, torch.tensor([0, 1, 2, 1]))
    loss.backward()
    params = dict(model.named_parameters())
    assert torch.isfinite(loss)
    for name in ("towers.us.visual.conv1.weight", "towers.us.visual.proj", "img_proj.us.weight", "text_proj.weight"):
        assert params[name].grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in text.parameters())  # the text tower stays frozen


def test_missing_or_unfit_clip_weights_name_the_file(weights, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match="nope.pt"):
        load_clip(NAME, str(missing))
    other = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="other.pt"):
        load_clip(NAME, str(other))
    with pytest.raises(WeightsError, match="hica.clip"):
        load_clip("ViT-B-16", None)  # no weights file, no hub id: never a random CLIP


def test_texts_cut_by_the_token_context_are_counted(weights, caplog):
    text = ClipSentenceEncoder(load_clip(NAME, weights), NAME)  # the tiny config's context: 16 tokens
    long = "a dark round lesion near the centre " * 4
    with caplog.at_level("WARNING", logger="medrepro"):
        cut = text.sentences([long, "a dark mass"])
    assert "1 of 2 texts fill the text tower's 16-token context" in caplog.text
    torch.testing.assert_close(cut[0], text.sentences([long + "and more words at the end"])[0])  # tail cut
