"""Generation metrics (FD, IS, improved precision/recall, paired bootstrap gaps) and their feature extractors."""

import numpy as np
import pytest
import torch

from medrepro.errors import WeightsError
from medrepro.metrics import generation as gm
from medrepro.metrics.extractors import INCEPTION_URL, inception_extractor, metric_columns, model_extractor
from medrepro.metrics.generation import (
    frechet_distance,
    generation_draws,
    generation_metrics,
    inception_score,
    paired_generation_draws,
    paired_generation_gap,
    percentile_interval,
    precision_recall,
)


def exact_moments(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n samples whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance → I
    return mean + z @ np.linalg.cholesky(cov).T


# ---------------------------------------------------------------- FD


def test_fd_of_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 8))
    wide = np.random.default_rng(1).standard_normal((20, 50))  # N < D: sample space
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(wide, wide) == pytest.approx(0.0, abs=1e-9)


def test_fd_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    x, y = exact_moments(rng, 50, m1, np.diag(v1)), exact_moments(rng, 70, m2, np.diag(v2))
    closed = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # commuting covariances
    assert frechet_distance(x, y) == pytest.approx(closed, rel=1e-9)


def test_fd_matches_closed_form_for_non_commuting_2d_gaussians():
    rng = np.random.default_rng(1)
    s1, s2 = np.array([[2.0, 0.8], [0.8, 1.0]]), np.array([[1.0, -0.3], [-0.3, 3.0]])
    m1, m2 = np.array([0.0, 0.0]), np.array([0.5, -1.0])
    x, y = exact_moments(rng, 40, m1, s1), exact_moments(rng, 40, m2, s2)
    # 2×2: tr √(S1 S2) = √(tr(S1 S2) + 2 √(det S1 det S2))
    tr_sqrt = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    closed = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(x, y) == pytest.approx(closed, rel=1e-9)


def test_fd_with_fewer_samples_than_dimensions_is_rotation_and_padding_invariant():
    """N < D runs in sample space; embedding D=6 features isometrically into D=80 must not change FD."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((30, 6)), rng.standard_normal((25, 6)) * 1.5 + 0.3
    q, _ = np.linalg.qr(rng.standard_normal((80, 6)))  # orthonormal columns
    assert frechet_distance(x @ q.T, y @ q.T) == pytest.approx(frechet_distance(x, y), rel=1e-8)


@pytest.mark.parametrize("d", [5, 40])  # feature space, sample space
def test_fd_is_symmetric(d):
    rng = np.random.default_rng(d)
    x, y = rng.standard_normal((30, d)), rng.standard_normal((35, d)) * 2 + 1
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)


def test_fd_rejects_bad_inputs():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# ---------------------------------------------------------------- IS


def test_is_is_one_for_identical_predictions():
    p = np.tile([0.7, 0.2, 0.1], (40, 1))
    assert inception_score(p) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("splits", [1, 2])
def test_is_is_k_for_confident_predictions_with_uniform_marginal(splits):
    k = 5
    p = np.eye(k)[np.tile(np.arange(k), 8)]  # each class 8 times, one-hot
    assert inception_score(p, splits=splits) == pytest.approx(k, rel=1e-12)


def test_is_rejects_non_probabilities():
    with pytest.raises(ValueError, match="probability"):
        inception_score(np.array([[0.5, 0.6]]))


# ---------------------------------------------------------------- precision / recall


def test_precision_recall_of_identical_sets_is_one():
    x = np.random.default_rng(0).standard_normal((100, 4))
    assert precision_recall(x, x) == (1.0, 1.0)


def test_one_mode_of_two_gives_full_precision_and_half_recall():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.standard_normal((300, 2)), rng.standard_normal((300, 2)) + 20])
    fake = rng.standard_normal((300, 2))  # a fresh sample of the first mode only
    precision, recall = precision_recall(real, fake)
    assert precision >= 0.95
    assert 0.45 <= recall <= 0.5  # the far mode (half the reals) is never inside the fake manifold


def test_far_away_fakes_have_zero_precision_and_recall():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((100, 3))
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_generation_metrics_keys():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((60, 3)), rng.standard_normal((50, 3))
    m = generation_metrics(real, fake, np.eye(5)[rng.integers(0, 5, 50)], k=3)
    assert set(m) == {"fd", "is", "precision", "recall"}
    assert m["fd"] == frechet_distance(real, fake) and (m["precision"], m["recall"]) == precision_recall(real, fake)


# ---------------------------------------------------------------- paired bootstrap


@pytest.fixture(scope="module")
def gap_sets():
    rng = np.random.default_rng(0)
    real, fake_a = rng.standard_normal((150, 4)), rng.standard_normal((150, 4))
    shifted = rng.standard_normal((120, 4)) + [2.5, 0, 0, 0]  # off the real set: worse FD and precision
    narrow = rng.standard_normal((120, 4)) * 0.4  # covers the real set's core only: worse recall
    probs_a = np.eye(10)[rng.integers(0, 10, 150)]  # confident and diverse
    probs_b = np.eye(10)[rng.integers(0, 3, 120)] * 0.8 + 0.02  # 3 classes, less confident: lower IS
    return {"real": real, "a": fake_a, "shifted": shifted, "narrow": narrow, "probs_a": probs_a, "probs_b": probs_b}


@pytest.mark.parametrize("metric,b,sign", [("fd", "shifted", 1), ("is", "shifted", -1), ("precision", "shifted", -1),
                                           ("recall", "narrow", -1)])
def test_paired_gap_sign_and_interval(gap_sets, metric, b, sign):
    s = gap_sets
    gap, lo, hi = paired_generation_gap(s["real"], s["a"], s[b], s["probs_a"], s["probs_b"], metric, n_boot=150)
    full_a = generation_metrics(s["real"], s["a"], s["probs_a"])
    full_b = generation_metrics(s["real"], s[b], s["probs_b"])
    assert gap == pytest.approx(full_b[metric] - full_a[metric], rel=1e-6, abs=1e-9)
    assert sign * gap > 0 and sign * lo > 0 and sign * hi > 0  # b worse, interval clear of 0
    assert lo <= gap <= hi


def test_paired_gap_of_a_set_with_itself_straddles_zero(gap_sets):
    real, fa, pa = gap_sets["real"], gap_sets["a"], gap_sets["probs_a"]
    gap, lo, hi = paired_generation_gap(real, fa, fa, pa, pa, "fd", n_boot=100, seed=1)
    assert gap == 0.0 and lo < 0 < hi
    assert paired_generation_gap(real, fa, fa, pa, pa, "fd", n_boot=100, seed=1) == (gap, lo, hi)  # seeded


def test_paired_gap_interval_is_the_percentile_interval_of_its_draws(gap_sets):
    s = gap_sets
    gap, draws = paired_generation_draws(s["real"], s["a"], s["narrow"], None, None, "recall", n_boot=40, seed=2)
    assert draws.shape == (40,)
    lo, hi = percentile_interval(draws)
    assert paired_generation_gap(s["real"], s["a"], s["narrow"], None, None, "recall", n_boot=40, seed=2) == \
        (gap, lo, hi)
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))


@pytest.mark.parametrize("metric", ["fd", "is", "precision", "recall"])
def test_draws_of_many_sets_give_each_its_interval_and_pair_them(gap_sets, metric):
    s = gap_sets
    fakes, probs = [s["a"], s["shifted"], s["narrow"]], [s["probs_a"], s["probs_b"], s["probs_b"]]
    values, draws = generation_draws(s["real"], fakes, probs, metric, n_boot=30, seed=3)
    assert values.shape == (3,) and draws.shape == (30, 3)
    for f, p, v in zip(fakes, probs, values, strict=True):  # the full sets: the plain metric of each
        assert v == pytest.approx(generation_metrics(s["real"], f, p)[metric], rel=1e-6, abs=1e-9)
    # two sets: the same replicates as the paired gap (one stream of draws: real, then each set)
    gap, gap_draws = paired_generation_draws(s["real"], s["a"], s["shifted"], s["probs_a"], s["probs_b"], metric,
                                             n_boot=30, seed=3)
    two_values, two = generation_draws(s["real"], fakes[:2], probs[:2], metric, n_boot=30, seed=3)
    assert gap == pytest.approx(two_values[1] - two_values[0]) and np.allclose(gap_draws, two[:, 1] - two[:, 0])
    assert np.ptp(draws, axis=0).min() > 0  # every set varies over the replicates


def test_resample_radii_equal_the_brute_force_kth_neighbour():
    """Bootstrap k-NN radii from sorted neighbour lists (and their fallback) = k-th NN among the distinct draws."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((60, 3))).float()
    d = gm._pairwise(x, x, lambda b: b)
    for m in (60, 5):  # m = 5 forces the full-row fallback for many rows
        radii = gm._ResampleRadii(d, k=3, m=m)
        counts = torch.from_numpy(np.bincount(rng.integers(0, 60, 60), minlength=60))
        rows, rad = radii(counts)
        assert torch.equal(rows, counts.nonzero().squeeze(1))
        assert torch.equal(rad, torch.stack([torch.sort(d[r, rows]).values[3] for r in rows]))


def test_paired_gap_rejects_unknown_metric(gap_sets):
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_generation_gap(gap_sets["real"], gap_sets["a"], gap_sets["narrow"], None, None, "fid")


# ---------------------------------------------------------------- extractors


def test_metric_columns_say_fid_only_for_inception():
    assert metric_columns("inception") == {"fd": "FID", "is": "IS", "precision": "precision", "recall": "recall"}
    assert metric_columns("resnet18") == {"fd": "FD_resnet18", "is": "IS_resnet18", "precision": "precision_resnet18",
                                          "recall": "recall_resnet18"}


def test_model_extractor_batches_without_grad():
    torch.manual_seed(0)
    backbone, head = torch.nn.Linear(3 * 4 * 4, 6), torch.nn.Linear(6, 3)
    ex = model_extractor("tiny", backbone, head, lambda x: x.float().flatten(1) / 255, batch_size=3)
    images = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    feats, probs = ex(images)
    assert ex.name == "tiny" and feats.shape == (7, 6) and probs.shape == (7, 3) and feats.dtype == np.float64
    with torch.no_grad():
        ref = backbone(images.float().flatten(1) / 255)
        assert np.allclose(feats, ref.numpy(), atol=1e-6)
        assert np.allclose(probs, torch.softmax(head(ref), 1).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        ex(images.float())
    with pytest.raises(ValueError, match="other than 'inception'"):
        model_extractor("inception", backbone, head, lambda x: x)


def test_inception_extractor_missing_file_names_it_and_the_url(tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(WeightsError, match="not found") as err:
        inception_extractor(path)
    assert str(path) in str(err.value) and INCEPTION_URL in str(err.value)


def test_inception_extractor_unreadable_file_names_it(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable torch state dict") as err:
        inception_extractor(path)
    assert str(path) in str(err.value) and INCEPTION_URL in str(err.value)


def test_inception_extractor_wrong_state_dict_names_it(tmp_path):
    path = tmp_path / "imagenet_inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "fc.weight": torch.zeros(1000, 2048)}, path)
    with pytest.raises(WeightsError, match="is not the FID Inception-v3") as err:
        inception_extractor(path)
    assert str(path) in str(err.value) and "(1000, 2048)" in str(err.value) and INCEPTION_URL in str(err.value)


@pytest.mark.slow  # 1.5-13 s on 2 shared cores (one 299×299 Inception forward on CPU)
def test_inception_extractor_loads_a_pytorch_fid_layout_file(tmp_path):
    """Random weights in pytorch-fid's key layout (torchvision Inception3, 1008 classes, no aux) load and run."""
    pytest.importorskip("torch_fidelity")
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    path = tmp_path / "pt_inception-random.pth"
    torch.save(net.state_dict(), path)
    ex = inception_extractor(path, device="cpu")
    feats, probs = ex(torch.randint(0, 256, (1, 3, 40, 50), dtype=torch.uint8))
    assert ex.name == "inception" and feats.shape == (1, 2048) and probs.shape == (1, 1008)
    assert np.isfinite(feats).all() and probs.sum() == pytest.approx(1.0)


def test_mean_rows_average_the_seeds_and_their_replicates():
    from medrepro.vap.evaluate import _mean_rows

    draws = {("oct", "train", "FD_x", "vap"): [(10.0, np.array([9.0, 11.0, 12.0])),
                                               (14.0, np.array([13.0, 15.0, 16.0]))]}
    (row,) = _mean_rows("synth_mm", draws, n_real=50)
    assert row["seed"] is None and row["generator"] == "vap" and row["FD_x"] == 12.0
    assert row["FD_x_std"] == pytest.approx(np.std([10.0, 14.0], ddof=1))
    assert (row["FD_x_ci_low"], row["FD_x_ci_high"]) == percentile_interval(np.array([11.0, 13.0, 14.0]))


def test_evaluate_dataset_with_two_seeds_reads_each_seeds_banks_with_the_class_names(monkeypatch):
    """Two seeds: every seed's prompt banks are read with the dataset's class names, each seed gets its rows and
    gaps, and the mean-over-seeds rows carry the metric's spread over seeds."""
    import pandas as pd
    from helpers import config

    from medrepro.vap import evaluate as ev

    classes, modalities = ["normal", "drusen"], ["fundus", "oct"]
    manifest = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)], "label": [i % 2 for i in range(12)],
                             "split": ["train"] * 4 + ["test"] * 8})
    monkeypatch.setattr(ev, "load_manifest", lambda root: (manifest, {"classes": classes, "modalities": modalities,
                                                                       "image_size": 8}))
    frames = np.random.default_rng(0).integers(0, 255, (12, 8, 8, 1), dtype=np.uint8)
    monkeypatch.setattr(ev, "open_generator_cache", lambda root, m, size: (frames, np.arange(12)))
    calls = []

    def bank_rows(dataset, bank, seed, names, mods):
        calls.append((bank, seed, list(names)))
        return pd.DataFrame([{"sample_id": f"s{i}", "label": i % 2, "modality": m, "t_mix": f"{bank} {i} {m}"}
                             for i in range(4) for m in mods])

    monkeypatch.setattr(ev, "bank_rows", bank_rows)
    monkeypatch.setattr(ev, "description", lambda weights: {"variant": str(weights).split("/")[-1]})

    class Paths:
        def __init__(self, variant: str) -> None:
            self.variant = variant

        def weights(self, seed, modality):
            return f"w/{seed}/{modality}/{self.variant}"

    monkeypatch.setattr(ev.layout, "generator", lambda dataset, variant, subset: Paths(variant))

    def generate_any(weights, texts, labels, seed, size, channels, cfg, device):
        shift = 40 if weights.endswith("/class") else 0  # class-only images sit further from the real ones
        rng = np.random.default_rng(seed)
        return np.clip(rng.integers(0, 200, (len(labels), size, size, channels)) + shift, 0, 255).astype(np.uint8)

    monkeypatch.setattr(ev, "generate_any", generate_any)

    class Extractor:
        name = "fake"

        def __call__(self, images):
            x = images.float().flatten(1).numpy()
            feats = np.stack([x.mean(1), x.std(1)], 1)
            probs = np.stack([np.full(len(x), 0.3), np.full(len(x), 0.7)], 1)
            return feats, probs

    params = {"seeds": [0, 1], "generation_metrics": {"generators": ["class", "vap"], "per_class": 4, "n_boot": 20,
                                                      "k": 2}}
    cfg = config(params)
    rows, gaps = ev.evaluate_dataset(cfg, "synth_mm", torch.device("cpu"), extractor=lambda *a: Extractor())

    assert calls == [(b, s, classes) for s in (0, 1) for b in ("train", "unseen")]
    table = pd.DataFrame(rows)
    per_seed = table[table["seed"].notna()]
    assert sorted(per_seed["seed"].unique()) == [0, 1]
    assert len(per_seed) == 2 * len(modalities) * 2 * 2  # seeds × modalities × banks × generators
    means = table[table["seed"].isna()]
    assert len(means) == len(modalities) * 2 * 2 and means["FD_fake_std"].notna().all()
    for _, row in means.iterrows():
        seeds = per_seed[(per_seed.modality == row.modality) & (per_seed.bank == row.bank)
                         & (per_seed.generator == row.generator)]
        assert row["FD_fake"] == pytest.approx(seeds["FD_fake"].mean())
    gap_seeds = {g["seed"] for g in gaps}
    assert gap_seeds == {0, 1, None} and all(g["a"] == "class" and g["b"] == "vap" for g in gaps)


def test_evaluate_dataset_scores_each_generator_with_the_real_data_classifier_cas(monkeypatch):
    """CAS: a classifier known to read the class from the brightness scores a generator that draws the class 1.0 and
    one that draws every class alike at the class share; real_acc is its accuracy on the real test crops."""
    import pandas as pd
    from helpers import config

    from medrepro.vap import evaluate as ev

    labels = np.array([i % 2 for i in range(12)])
    manifest = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)], "label": labels,
                             "split": ["train"] * 4 + ["test"] * 8})
    monkeypatch.setattr(ev, "load_manifest", lambda root: (manifest, {"classes": ["a", "b"], "modalities": ["x"]}))
    frames = np.where(labels[:, None, None, None] == 1, 200, 50).astype(np.uint8) * np.ones((1, 8, 8, 1), np.uint8)
    monkeypatch.setattr(ev, "open_generator_cache", lambda root, m, size: (frames, np.arange(12)))
    monkeypatch.setattr(ev, "bank_rows", lambda dataset, bank, seed, names, mods: pd.DataFrame(
        [{"sample_id": f"s{i}", "label": i % 2, "modality": "x", "t_mix": "free text"} for i in range(4)]))
    monkeypatch.setattr(ev, "description", lambda weights: {"variant": str(weights).split("/")[-1]})
    monkeypatch.setattr(ev.layout, "generator", lambda dataset, variant, subset: type(
        "P", (), {"weights": lambda self, seed, m: f"w/{variant}"})())

    def generate_any(weights, texts, labels, seed, size, channels, cfg, device):
        value = np.where(labels == 1, 200, 50) if weights.endswith("vap") else np.full(len(labels), 50)
        noise = np.random.default_rng(seed).integers(0, 5, (len(labels), size, size, channels))
        return (value[:, None, None, None] + noise).astype(np.uint8)

    monkeypatch.setattr(ev, "generate_any", generate_any)

    class Brightness:  # the classifier: class 1 iff the image is bright
        name = "fake"

        def __call__(self, images):
            x = images.float().flatten(1).numpy()
            bright = (x.mean(1) > 127).astype(float)
            return np.stack([x.mean(1), x.std(1)], 1), np.stack([1 - bright, bright], 1) * 0.98 + 0.01

    cfg = config({"seeds": [0], "generation_metrics": {"generators": ["class", "vap"], "per_class": 10, "n_boot": 50,
                                                       "k": 2}})
    rows, gaps = ev.evaluate_dataset(cfg, "synth_mm", torch.device("cpu"), extractor=lambda *a: Brightness())
    table = pd.DataFrame(rows).set_index(["generator", "bank"])
    assert table.loc[("vap", "train"), "CAS"] == 1.0 and table.loc[("class", "train"), "CAS"] == 0.5
    assert (table["real_acc"] == 1.0).all() and table.loc[("class", "train"), "CAS_ratio"] == 0.5
    assert table.loc[("class", "train"), "CAS_skill"] == 0.0 and table.loc[("vap", "train"), "CAS_skill"] == 1.0
    assert table["adherence"].isna().all()  # free-text captions: no attributes to measure
    (gap,) = [g for g in gaps if g["metric"] == "CAS" and g["bank"] == "train"]
    assert gap["gap_b_minus_a"] == 0.5 and gap["ci_low"] > 0
