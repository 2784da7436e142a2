"""The openai backend against a local chat-completions server: faults end in a clean retry or one clear error."""

from __future__ import annotations

import json
import time
import tracemalloc

import pandas as pd
import pytest
from captions_fixtures import prepared_synth
from chat_server import ChatServer

from medrepro.captions.backends.base import Request
from medrepro.captions.backends.openai_compat import OpenAIBackend
from medrepro.captions.bank import dataset_items
from medrepro.captions.cache import CaptionCache
from medrepro.captions.vaps import CaptionError, caption_items
from medrepro.config import OpenAIConfig

KEY = "sk-test-not-a-real-key-0123456789"


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("oai")
    folder, manifest, classes = prepared_synth(root, 8, 4, gen_size=32)
    its = dataset_items("synth_mm", manifest, classes, folder, ("train", "val"))
    return [its[0], its[1], its[2], its[-1], its[-2]]  # both modalities


@pytest.fixture
def server():
    srv = ChatServer(slow_s=0.3, hang_s=2.0)
    yield srv
    srv.stop()


def backend(url: str, retries: int = 6, timeout_s: float = 1.0, concurrency: int = 2) -> OpenAIBackend:
    cfg = OpenAIConfig(base_url=url, model="tiny-vlm", api_key_env="MEDREPRO_TEST_KEY", timeout_s=timeout_s,
                       retries=retries, backoff_s=0.01, concurrency=concurrency, temperature=0.0)
    return OpenAIBackend(cfg, 64)


def total(items) -> int:
    return 2 * len(items) + len({it.modality.name for it in items})


def test_captions_from_a_server_then_none_asked_again(items, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREPRO_TEST_KEY", KEY)
    out, stats = caption_items(items, backend(server.url), CaptionCache(tmp_path / "c"), 4)
    assert server.requests == total(items) == stats.requests
    assert out["t_mix"].str.startswith("caption ").all() and set(out["model"]) == {"tiny-vlm"}
    with_image = [b for b in server.bodies if len(b["messages"][0]["content"]) == 2]
    assert len(with_image) == 2 * len(items)  # steps 1 and 3 see the image, step 2 does not
    assert with_image[0]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert set(server.auth) == {f"Bearer {KEY}"}
    again, stats2 = caption_items(items, backend(server.url), CaptionCache(tmp_path / "c"), 4)
    assert server.requests == total(items) and stats2.requests == 0
    pd.testing.assert_frame_equal(out, again)


@pytest.mark.parametrize("fault", ["500", "timeout", "slow", "malformed", "empty", "shape"])
def test_each_fault_is_retried_cleanly(items, server, tmp_path, fault):
    reference = ChatServer()
    try:
        clean, _ = caption_items(items, backend(reference.url), CaptionCache(tmp_path / "ref"), 4)
    finally:
        reference.stop()
    server.faults = [fault] * 2
    out, stats = caption_items(items, backend(server.url, concurrency=1), CaptionCache(tmp_path / "c"), 4)
    extra = 0 if fault == "slow" else 2
    assert server.requests == total(items) + extra and stats.failures == {}
    pd.testing.assert_frame_equal(out, clean)  # nothing lost, nothing replaced


def test_persistent_errors_fail_naming_count_url_and_reason_then_retry(items, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREPRO_TEST_KEY", KEY)
    server.faults = ["500"] * 1000
    cache = CaptionCache(tmp_path / "c")
    with pytest.raises(CaptionError) as err:
        caption_items(items, backend(server.url, retries=2), cache, 4)
    msg = str(err.value)
    assert f"{len(items)} of {len(items)} images" in msg and f"{server.url}/chat/completions: HTTP 500" in msg
    assert KEY not in msg and all(KEY not in str(f) for f in cache.failures().values())
    server.faults = []
    before = server.requests
    out, _ = caption_items(items, backend(server.url), cache, 4)
    assert server.requests - before == total(items) and len(out) == len(items) and cache.failures() == {}


def test_client_errors_are_not_retried(items, server, tmp_path):
    server.faults = ["401"] * 1000
    with pytest.raises(CaptionError, match="HTTP 401"):
        caption_items(items[:1], backend(server.url), CaptionCache(tmp_path / "c"), 4)
    assert server.requests == 2  # steps 2 and 1 once each, no retry; step 3 needs their answers, so not asked


def test_server_going_away_mid_run_then_resume(items, server, tmp_path):
    reference = ChatServer()
    try:
        clean, _ = caption_items(items, backend(reference.url), CaptionCache(tmp_path / "ref"), 2)
    finally:
        reference.stop()
    cache = CaptionCache(tmp_path / "c")
    with pytest.raises(CaptionError, match="connection failed"):
        caption_items(items, backend(server.url, retries=1), cache, 2, on_batch=server.stop)
    asked = server.requests
    assert 0 < asked < total(items)
    back = ChatServer()  # the server returns (on another port: the cache key holds no URL)
    try:
        out, stats = caption_items(items, backend(back.url), cache, 2)
        assert back.requests == total(items) - asked == stats.requests
    finally:
        back.stop()
    pd.testing.assert_frame_equal(out, clean)


def one_request(items) -> Request:
    mod = items[0].modality
    return Request("k", 2, mod, mod.question(2), None)


def test_a_trickling_reply_is_cut_at_the_total_deadline(items):
    """timeout_s bounds the whole try, not each read: headers, then a byte every 0.25 s, fails after ~2 × 1 s."""
    srv = ChatServer(trickle_s=0.25, trickle_bytes=40)  # 10 s per reply: each read alone is quick
    srv.faults = ["trickle"] * 10
    be = backend(srv.url, retries=1, timeout_s=1.0, concurrency=1)
    try:
        start = time.monotonic()
        [ans] = be.answer([one_request(items)])
        elapsed = time.monotonic() - start
    finally:
        be.close()
        srv.stop()
    assert ans.text is None and "no complete answer within timeout_s=1.0 s (after 2 tries)" in ans.error
    assert srv.requests == 2 and elapsed < 2 * 1.0 + 1.5


@pytest.mark.parametrize("fault", ["huge", "huge_cl"])
def test_a_huge_reply_is_not_read_past_the_cap(items, fault):
    srv = ChatServer(huge_bytes=200 << 20)
    srv.faults = [fault]
    be = backend(srv.url, retries=0, timeout_s=20.0, concurrency=1)
    tracemalloc.start()
    try:
        [ans] = be.answer([one_request(items)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        be.close()
        srv.stop()
    assert ans.text is None and "-byte limit (not read" in ans.error
    assert peak < 4 * be.max_reply_bytes and srv.sent < 64 << 20  # memory bounded; the rest never left the server


def test_control_characters_are_stripped_before_caching(items, tmp_path):
    srv = ChatServer()
    srv.faults = ["dirty"] * 3
    cache = CaptionCache(tmp_path / "c")
    try:
        out, _ = caption_items(items[:1], backend(srv.url), cache, 4)
    finally:
        srv.stop()
    assert out[["t1", "t2", "t_mix"]].iloc[0].tolist() == ["a red lesion on skin"] * 3
    stored = [json.loads(p.read_text())["text"] for p in (tmp_path / "c").glob("??/*.json")]
    assert stored == ["a red lesion on skin"] * 3


def test_a_reply_far_over_max_new_tokens_is_an_error_never_a_caption(items, tmp_path):
    srv = ChatServer()
    srv.faults = ["long"] * 1000
    cache = CaptionCache(tmp_path / "c")
    try:
        with pytest.raises(CaptionError, match=r"50,000 characters, more than max_new_tokens=64 allows \(at most 1,"):
            caption_items(items[:1], backend(srv.url, retries=1), cache, 4)
    finally:
        srv.stop()
    assert not list((tmp_path / "c").glob("??/*.json"))  # nothing cached
    failures = cache.failures().values()
    assert failures and all("50,000 characters" in f["error"] and len(f["error"]) < 300 for f in failures)
