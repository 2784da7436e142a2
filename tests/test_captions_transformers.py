"""The transformers backend runs the real processor → generate → decode path on a tiny random VLM."""

from __future__ import annotations

import pytest
from captions_fixtures import prepared_synth
from tiny_vlm import build_tiny_vlm

from medrepro.captions.backends.hf_vlm import TransformersBackend
from medrepro.captions.bank import dataset_items
from medrepro.captions.cache import CaptionCache
from medrepro.captions.vaps import caption_items
from medrepro.config import TransformersConfig
from medrepro.errors import WeightsError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    folder, manifest, classes = prepared_synth(root, 8, 4, gen_size=32)
    items = dataset_items("synth_mm", manifest, classes, folder, ("train",))
    return build_tiny_vlm(root / "tiny-llava"), [items[0], items[1], items[2], items[-1]]


def test_generate_path_end_to_end(tiny, tmp_path):
    model_dir, items = tiny
    backend = TransformersBackend(TransformersConfig(model=str(model_dir), dtype="auto", batch_size=2), 6)
    calls = []
    generate = backend.net.generate

    def spy(**kw):
        calls.append(("pixel_values" in kw, kw["input_ids"].shape[0]))
        return generate(**kw)

    backend.net.generate = spy
    out, stats = caption_items(items, backend, CaptionCache(tmp_path / "c"), 8)
    assert len(out) == len(items) and out[["t1", "t2", "t_mix"]].map(lambda t: len(t.split()) >= 1).all().all()
    assert set(out["backend"]) == {"transformers"} and set(out["model"]) == {str(model_dir)}
    # step 2 (two modalities) text-only in one batch; steps 1 and 3 with images in batches of two
    assert calls == [(False, 2), (True, 2), (True, 2), (True, 2), (True, 2)]
    again = TransformersBackend(TransformersConfig(model=str(model_dir), dtype="auto", batch_size=2), 6)
    again.net.generate = None  # a second run must not generate anything
    out2, stats2 = caption_items(items, again, CaptionCache(tmp_path / "c"), 8)
    assert stats2.requests == 0 and out2.equals(out)


def test_missing_model_names_what_was_looked_for(tmp_path):
    missing = tmp_path / "no-such-vlm"
    missing.mkdir()
    with pytest.raises(WeightsError, match=rf"captions.transformers.model: .*{missing.name}.*local folder"):
        TransformersBackend(TransformersConfig(model=str(missing), dtype="fp32", batch_size=1), 4)
