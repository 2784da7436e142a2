"""Generation metrics of VAP-Diffusion Tables 1-2 on feature vectors: FD, IS, improved precision/recall, paired gaps;
and the classification accuracy score (``accuracy_draws``: a real-data classifier on generated images).

Conventions:
- ``real``/``fake`` are (N, D) features of one extractor (``metrics.extractors``); FD on the FID Inception-v3 pool3
  features is FID, on any other features it is ``FD_<name>`` (``extractors.metric_columns``). ``probs`` are (N, K)
  class probabilities of the generated images (softmax of that extractor's logits).
- Covariances are unbiased (÷ N − 1), as in pytorch-fid / torch-fidelity.
- N ≤ D (e.g. a few hundred test images and 2048-d Inception features): the empirical covariances have rank
  ≤ N − 1. FD is still computed exactly for those covariances — square roots of PSD matrices only, eigenvalues
  clipped at 0, no ``eps`` added to the diagonal, no complex parts to discard — and then in sample space
  (tr √(S₁S₂) = nuclear norm of A₁A₂ᵀ with Sᵢ = AᵢᵀAᵢ), which is also cheaper. But FD is biased upward, the more
  so the smaller N / D: compare FDs only at equal N, same extractor (or through ``paired_generation_gap``).
- Precision/recall compute distances in float32 torch after centring all features at the real mean (keeps
  ‖x‖² + ‖y‖² − 2xᵀy accurate); everything else is float64 numpy/scipy.
- FD and the bootstrap loops run numpy/scipy BLAS single-threaded (threadpoolctl): on 2 shared, busy cores
  OpenBLAS's 2 threads made FD 5-20× slower (N = 2000, D = 2048: 37 s vs 5.6 s); an idle multi-core machine
  loses at most its BLAS parallelism.
- VAP-Diffusion cites Sajjadi et al. 2018 for precision/recall ([25]); its values (single numbers in [0, 1]) fit the
  k-NN "improved" precision/recall of Kynkäänniemi et al. 2019 implemented here (k = 3, their default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import scipy.linalg
import torch
from scipy.special import xlogy
from threadpoolctl import threadpool_limits

__all__ = ["METRICS", "accuracy_draws", "frechet_distance", "generation_draws", "generation_metrics", "inception_score",
           "paired_generation_gap", "precision_recall"]

#: keys of ``generation_metrics`` and the ``metric`` names ``paired_generation_gap`` accepts
METRICS: tuple[str, ...] = ("fd", "is", "precision", "recall")
_BATCH = 1024  # query rows per block of pairwise distances (1024 × 5000 float32 = 20 MB)


def _features(x: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < min_rows:
        raise ValueError(f"{name} must be a 2-d (N, D) array with N >= {min_rows}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")
    return x


def _same_dim(**arrays: np.ndarray) -> None:
    dims = {k: v.shape[1] for k, v in arrays.items()}
    if len(set(dims.values())) > 1:
        raise ValueError(f"feature dimensions differ: {dims}")


# ---------------------------------------------------------------- Fréchet distance


def _sqrt_factor(s: np.ndarray) -> np.ndarray:
    """F with F Fᵀ = s for a symmetric PSD s: Cholesky, or V √Λ₊ from eigh when s is singular."""
    try:
        return scipy.linalg.cholesky(s, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        lam, v = scipy.linalg.eigh(s, check_finite=False)
        return v * np.sqrt(np.clip(lam, 0.0, None))


def _sum_sqrt_eig(m: np.ndarray) -> float:
    """Σ √λ over the eigenvalues of a symmetric PSD m (negative rounding noise clipped to 0)."""
    lam = scipy.linalg.eigh(m, eigvals_only=True, driver="evd", check_finite=False)
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


class _Frechet:
    """FD of one real set to fake sets, each a multiset given by per-row counts (all ones = the sets themselves).

    Precomputes what every bootstrap replicate shares: features shifted by the real mean (FD is shift-invariant;
    keeps products small), squared row norms (covariance traces), and in sample space (D > the smallest N) the
    cross Gram matrices X_r X_fᵀ.
    """

    def __init__(self, real: np.ndarray, fakes: Sequence[np.ndarray]) -> None:
        shift = real.mean(0)
        self.sets = [real - shift] + [f - shift for f in fakes]
        self.sq_norms = [np.einsum("ij,ij->i", x, x) for x in self.sets]
        self.sample_space = real.shape[1] > min(len(x) for x in self.sets)
        self.cross = [self.sets[0] @ f.T for f in self.sets[1:]] if self.sample_space else []

    def _moments(self, i: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Drawn rows, their √(count / (n − 1)), the mean and the covariance trace of multiset ``i``."""
        rows = np.flatnonzero(counts)
        n = counts.sum()
        mu = counts @ self.sets[i] / n
        trace = (counts @ self.sq_norms[i] - n * (mu @ mu)) / (n - 1)
        return rows, np.sqrt(counts[rows] / (n - 1)), mu, float(trace)

    def __call__(self, c_real: np.ndarray, c_fakes: Sequence[np.ndarray]) -> list[float]:
        real = self.sets[0]
        rows_r, sw_r, mu_r, tr_r = self._moments(0, c_real)
        if not self.sample_space:
            a_r = (real[rows_r] - mu_r) * sw_r[:, None]  # A_rᵀ A_r = S_r
            f_r = _sqrt_factor(a_r.T @ a_r)
        out = []
        for i, c_f in enumerate(c_fakes, start=1):
            fake = self.sets[i]
            rows_f, sw_f, mu_f, tr_f = self._moments(i, c_f)
            if self.sample_space:  # tr √(S_r S_f) = ‖A_r A_fᵀ‖_*, A_r A_fᵀ centred from the cross Gram matrix
                g = (self.cross[i - 1][np.ix_(rows_r, rows_f)] - (real @ mu_f)[rows_r, None]
                     - (fake @ mu_r)[None, rows_f] + mu_r @ mu_f) * sw_r[:, None] * sw_f[None, :]
                # singular values directly: g has rank < its size (centring), and √ of GGᵀ's zero eigenvalues
                # would add ~√ε noise each
                tr_sqrt = float(scipy.linalg.svdvals(g, check_finite=False).sum())
            else:  # tr √(S_r S_f) = Σ √eig(Fᵀ S_f F) with F Fᵀ = S_r, Fᵀ S_f F = (A_f F)ᵀ(A_f F)
                b = ((fake[rows_f] - mu_f) * sw_f[:, None]) @ f_r
                tr_sqrt = _sum_sqrt_eig(b.T @ b)
            fd = float(np.sum((mu_r - mu_f) ** 2) + tr_r + tr_f - 2.0 * tr_sqrt)
            out.append(max(fd, 0.0))  # identical sets give ±1e-12 rounding noise
        return out


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception pool3).

    FD = ‖μ_r − μ_f‖² + tr S_r + tr S_f − 2 tr √(S_r S_f); the trace term comes from one symmetric eigenvalue
    problem of size D or, when D exceeds a set size, one SVD of size N_r × N_f (see the module docstring).
    """
    # Heusel et al. 2017, Eq. 6 (Fréchet / 2-Wasserstein distance of two Gaussians)
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_dim(real=real, fake=fake)
    with threadpool_limits(limits=1, user_api="blas"):
        return _Frechet(real, [fake])(np.ones(len(real), np.int64), [np.ones(len(fake), np.int64)])[0]


# ---------------------------------------------------------------- Inception score


def _probs(p: np.ndarray, name: str = "probs") -> np.ndarray:
    p = _features(p, name, min_rows=1)
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError(f"{name} rows must be probability vectors (non-negative, summing to 1)")
    return p


def _is_weighted(p: np.ndarray, neg_entropy: np.ndarray, w: np.ndarray) -> float:
    """exp(E_w KL(p_i ‖ p̄)) with p̄ = Σ w_i p_i, Σ w = 1: E_w KL = E_w Σ p log p − Σ p̄ log p̄."""
    marginal = w @ p
    return float(np.exp(w @ neg_entropy - xlogy(marginal, marginal).sum()))


def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) ‖ p(y))), mean over ``splits`` contiguous chunks (published IS: 10 splits of 50k)."""
    # Salimans et al. 2016, Sec. 4 (Inception score)
    p = _probs(probs)
    if not 1 <= splits <= len(p):
        raise ValueError(f"splits must be in [1, {len(p)}], got {splits}")
    neg_entropy = xlogy(p, p).sum(1)
    scores = [_is_weighted(p[idx], neg_entropy[idx], np.full(len(idx), 1.0 / len(idx)))
              for idx in np.array_split(np.arange(len(p)), splits)]
    return float(np.mean(scores))


# ---------------------------------------------------------------- classification accuracy score


def accuracy_draws(probs: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Accuracy of argmax(probs) against ``labels`` and its replicates for bootstrap row ``counts`` (R, N).

    On a generator's samples against the class each was generated for, with a classifier trained on real data, this
    is the classification accuracy score (CAS; Ravuri & Vinyals 2019, Sec. 3)."""
    correct = (np.asarray(probs).argmax(1) == np.asarray(labels)).astype(np.float64)
    if len(correct) == 0:
        raise ValueError("accuracy of an empty set")
    return float(correct.mean()), counts @ correct / counts.sum(1)


# ---------------------------------------------------------------- improved precision / recall


def _sq_dists(x: torch.Tensor, y: torch.Tensor, y_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (len(x), len(y)) by ‖x‖² + ‖y‖² − 2xᵀy, clamped at 0."""
    return torch.addmm(y_sq[None, :] + (x * x).sum(1, keepdim=True), x, y.T, alpha=-2.0).clamp_(min=0.0)


def _pairwise(x: torch.Tensor, y: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reduce`` applied to blocks of rows of the squared distance matrix x ↔ y, concatenated."""
    y_sq = (y * y).sum(1)
    return torch.cat([reduce(_sq_dists(x[i:i + _BATCH], y, y_sq)) for i in range(0, len(x), _BATCH)])


def _kth_smallest(d: torch.Tensor, k: int) -> torch.Tensor:
    """(k+1)-th smallest entry of each row: the k-th neighbour once the row's own 0 is skipped (topk ≫ kthvalue)."""
    return d.topk(k + 1, dim=1, largest=False).values[:, -1]


def _radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance of each row to its k-th nearest neighbour in x, itself excluded."""
    return _pairwise(x, x, lambda d: _kth_smallest(d, k))


def _coverage(r: torch.Tensor, f: torch.Tensor, rad_r: torch.Tensor,
              rad_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each fake inside the real k-NN manifold, each real inside the fake one) from one pass over r ↔ f."""
    f_sq = (f * f).sum(1)
    fake_in = torch.zeros(len(f), dtype=torch.bool)
    real_in = []
    for i in range(0, len(r), _BATCH):
        d = _sq_dists(r[i:i + _BATCH], f, f_sq)
        fake_in |= (d <= rad_r[i:i + _BATCH, None]).any(0)
        real_in.append((d <= rad_f[None, :]).any(1))
    return fake_in, torch.cat(real_in)


def _as_torch(real: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    centre = real.mean(0)
    return [torch.from_numpy(a - centre).float() for a in (real, *others)]


def _check_k(k: int, **sizes: int) -> None:
    if k < 1 or any(n <= k for n in sizes.values()):
        raise ValueError(f"k must be >= 1 and below every set size, got k={k} for sizes {sizes}")


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (fakes inside the real k-NN manifold) and recall (reals inside the fake manifold)."""
    # Kynkäänniemi et al. 2019, Eqs. 1-3: f(φ, Φ) = 1 iff ‖φ − φ'‖ ≤ ‖φ' − NN_k(φ')‖ for some φ' ∈ Φ
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_dim(real=real, fake=fake)
    _check_k(k, real=len(real), fake=len(fake))
    r, f = _as_torch(real, fake)
    fake_in, real_in = _coverage(r, f, _radii(r, k), _radii(f, k))
    return fake_in.double().mean().item(), real_in.double().mean().item()


def generation_metrics(real_feats: np.ndarray, fake_feats: np.ndarray, fake_probs: np.ndarray,
                       k: int = 3) -> dict[str, float]:
    """FD, IS (1 split), precision and recall of one generated set against the real (test) set."""
    precision, recall = precision_recall(real_feats, fake_feats, k)
    return {"fd": frechet_distance(real_feats, fake_feats), "is": inception_score(fake_probs),
            "precision": precision, "recall": recall}


# ---------------------------------------------------------------- paired bootstrap


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _ResampleRadii:
    """k-NN radii of the distinct points of a bootstrap resample of one set, from precomputed sorted neighbours.

    The manifold of a resample is the union of balls around its distinct points, each reaching the k-th nearest
    other distinct point. (Counting a row drawn twice as its own neighbour at distance 0 collapses the balls:
    measured, that biases bootstrap precision and recall by about −0.1, distinct points by ≤ 0.01.) The k-th is
    found along each row's ``m`` nearest neighbours; rows with fewer than k drawn among them use the full row.
    """

    def __init__(self, d: torch.Tensor, k: int, m: int = 64) -> None:
        self.d, self.k = d, k
        self.near, self.order = d.topk(min(m, d.shape[1]), dim=1, largest=False)  # ascending

    def __call__(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(drawn rows, their squared radii) for bootstrap ``counts`` per row."""
        drawn = counts > 0
        rows = drawn.nonzero().squeeze(1)
        reached = drawn[self.order[rows]].cumsum(1) >= self.k + 1  # itself + k others
        rad = self.near[rows].gather(1, reached.int().argmax(1, keepdim=True)).squeeze(1)
        short = (~reached[:, -1]).nonzero().squeeze(1)
        if len(short):
            rad[short] = _kth_smallest(self.d[rows[short][:, None], rows[None, :]], self.k)
        return rows, rad


def _knn_stat(real: np.ndarray, fakes: Sequence[np.ndarray], k: int,
              metric: str) -> Callable[[np.ndarray, Sequence[np.ndarray]], list[float]]:
    """metric of each fake set, resampled by bootstrap counts, from precomputed squared distances."""
    r, *fs = _as_torch(real, *fakes)
    full = lambda x, y: _pairwise(x, y, lambda d: d)  # noqa: E731
    if metric == "precision":
        d_rf = [full(r, f) for f in fs]  # (n_r, n_f): rows are the real balls
        real_radii = _ResampleRadii(full(r, r), k)
    else:
        d_fr = [full(f, r) for f in fs]  # (n_f, n_r): rows are the fake balls
        fake_radii = [_ResampleRadii(full(f, f), k) for f in fs]

    def stat(c_r: np.ndarray, c_fakes: Sequence[np.ndarray]) -> list[float]:
        cr, cfs = torch.from_numpy(c_r), [torch.from_numpy(c) for c in c_fakes]
        out = []
        if metric == "precision":
            rows, rad = real_radii(cr)
            for d, cf in zip(d_rf, cfs, strict=True):
                inside = (d[rows] <= rad[:, None]).any(0)  # each fake: inside the resampled real manifold?
                out.append(float((cf * inside).sum() / cf.sum()))
        else:
            for d, radii, cf in zip(d_fr, fake_radii, cfs, strict=True):
                rows, rad = radii(cf)
                inside = (d[rows] <= rad[:, None]).any(0)  # each real: inside the resampled fake manifold?
                out.append(float((cr * inside).sum() / cr.sum()))
        return out

    return stat


def paired_generation_gap(real_feats: np.ndarray, fake_a: np.ndarray, fake_b: np.ndarray, probs_a: np.ndarray | None,
                          probs_b: np.ndarray | None, metric: str, n_boot: int = 1000, seed: int = 0, k: int = 3,
                          level: float = 0.95) -> tuple[float, float, float]:
    """metric(b) − metric(a) on the full sets and its percentile bootstrap interval (``level``, default 95 %);
    the replicates are ``paired_generation_draws``'."""
    gap, draws = paired_generation_draws(real_feats, fake_a, fake_b, probs_a, probs_b, metric, n_boot, seed, k)
    lo, hi = percentile_interval(draws, level)
    return gap, lo, hi


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap replicates (NaN replicates ignored)."""
    if not 0 < level < 1:
        raise ValueError(f"need 0 < level < 1, got {level}")
    tail = (1 - level) / 2
    lo, hi = np.nanquantile(draws, [tail, 1 - tail])
    return float(lo), float(hi)


def paired_generation_draws(real_feats: np.ndarray, fake_a: np.ndarray, fake_b: np.ndarray,
                            probs_a: np.ndarray | None, probs_b: np.ndarray | None, metric: str, n_boot: int = 1000,
                            seed: int = 0, k: int = 3) -> tuple[float, np.ndarray]:
    """metric(b) − metric(a) on the full sets and ``n_boot`` paired bootstrap replicates of it
    (``generation_draws`` of the two sets)."""
    values, draws = generation_draws(real_feats, [fake_a, fake_b], [probs_a, probs_b], metric, n_boot, seed, k)
    return float(values[1] - values[0]), draws[:, 1] - draws[:, 0]


def generation_draws(real_feats: np.ndarray, fakes: Sequence[np.ndarray], probs: Sequence[np.ndarray | None],
                     metric: str, n_boot: int = 1000, seed: int = 0, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """metric of each generated set on the full sets (G,) and ``n_boot`` bootstrap replicates (n_boot, G).

    Each replicate resamples the real (test) set once, shared by every generated set (so differences of columns are
    paired), and each generated set independently, all with replacement at their own sizes, and the statistic is
    recomputed on the resampled multisets (means weighted by the draw counts; k-NN manifolds from the distinct
    drawn points, see ``_ResampleRadii``). ``probs`` are only read for ``"is"``, which ignores the real set (its
    draws are still made, so a seed gives every metric the same replicates). Cost per replicate and set: FD two
    symmetric eigenvalue problems of size min(D, ~0.63 N) (the floor: D = 512 about 0.1 s); precision/recall
    O(N²) on precomputed N×N float32 distance matrices; IS O(N K).
    """
    # Efron & Tibshirani 1993, percentile interval; paired over the shared real set
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if n_boot < 1:
        raise ValueError(f"need n_boot >= 1, got {n_boot}")
    if len(fakes) != len(probs) or not fakes:
        raise ValueError(f"need one probs entry per generated set, got {len(fakes)} sets and {len(probs)}")
    real = _features(real_feats, "real_feats")
    stat: Callable[[np.ndarray, Sequence[np.ndarray]], list[float]]
    if metric == "is":
        ps = [_probs(p, f"probs[{i}]") for i, p in enumerate(probs)]
        hs = [xlogy(p, p).sum(1) for p in ps]
        sizes = [len(p) for p in ps]

        def stat(c_r: np.ndarray, c_fakes: Sequence[np.ndarray]) -> list[float]:
            return [_is_weighted(p, h, c / c.sum()) for p, h, c in zip(ps, hs, c_fakes, strict=True)]
    else:
        fs = [_features(f, f"fakes[{i}]") for i, f in enumerate(fakes)]
        _same_dim(real_feats=real, **{f"fakes[{i}]": f for i, f in enumerate(fs)})
        sizes = [len(f) for f in fs]
        if metric == "fd":
            stat = _Frechet(real, fs)
        else:
            _check_k(k, real=len(real), **{f"fakes[{i}]": n for i, n in enumerate(sizes)})
            stat = _knn_stat(real, fs, k, metric)
    n_r = len(real)

    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, len(sizes)))
    # many small BLAS/torch calls: one thread is up to 50× faster than 2 contended threads on shared cores
    with threadpool_limits(limits=1), _torch_threads(1):
        values = np.asarray(stat(np.ones(n_r, np.int64), [np.ones(n, np.int64) for n in sizes]))
        for i in range(n_boot):
            c_r = np.bincount(rng.integers(0, n_r, n_r), minlength=n_r)
            draws[i] = stat(c_r, [np.bincount(rng.integers(0, n, n), minlength=n) for n in sizes])
    return values, draws
