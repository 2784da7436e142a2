"""HiCA's hierarchical contrastive losses (Sec. III-B, Eqs. 2-5) on L2-normalised embeddings.

Choices where the paper is open (docs/hica.md):
- Global (Eq. 3): the text of image i is its class descriptor. A batch holds repeated classes, so the softmax runs
  over the distinct class descriptors (Eq. 3 with duplicate texts merged): identical texts in the denominator would
  count the positive as its own negative and floor the loss at log(#same-class) instead of 0.
- Local (Eq. 4): every ROI k of image i is paired with image i's fine-grained descriptor (its caption); the softmax
  runs over the captions of the batch's images. ROIs of padding (``roi_mask`` False) do not count.
- Cross-category (Eq. 5): hinge max(0, sim − δ) over every image and every class descriptor other than its own.

``clip_loss`` (Radford et al. 2021) aligns images with their own captions, no labels: the zero-shot baseline's
stand-in for a pretrained CLIP when the towers are not one (``medrepro.hica.baselines``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """sim(u, v) = uᵀv / (‖u‖‖v‖) for every row of ``a`` against every row of ``b`` → (len(a), len(b))."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def global_loss(z_img: Tensor, z_class: Tensor, labels: Tensor, tau: float) -> Tensor:
    """Eq. 3: −1/B Σ_i log softmax_j(sim(z_i^img, z_j^text)/τ)[y_i], j over the class descriptors (C, d)."""
    return F.cross_entropy(cosine(z_img, z_class) / tau, labels)


def local_loss(z_roi: Tensor, roi_mask: Tensor, z_caption: Tensor, tau: float) -> Tensor:
    """Eq. 4: −1/B Σ_i Σ_k log softmax_j(sim(z_i,k^roi, t_j)/τ)[i] for ROI embeddings (B, K, d) with a (B, K) mask
    and one fine-grained descriptor embedding per image (B, d); the sum over k is normalised by each image's ROI
    count so that images with many ROIs do not dominate."""
    b, k, d = z_roi.shape
    logits = cosine(z_roi.reshape(b * k, d), z_caption) / tau  # (B·K, B)
    target = torch.arange(b, device=z_roi.device).repeat_interleave(k)
    per_roi = F.cross_entropy(logits, target, reduction="none").view(b, k) * roi_mask
    return (per_roi.sum(1) / roi_mask.sum(1).clamp(min=1)).mean()


def cross_loss(z_img: Tensor, z_class: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Eq. 5: 1/|P| Σ_(i,j)∈P max(0, sim(z_i^img, z_j^text) − δ), P = (image, class descriptor) pairs with y_i ≠ j."""
    sims = cosine(z_img, z_class)
    wrong = torch.ones_like(sims, dtype=torch.bool)
    wrong[torch.arange(len(labels), device=sims.device), labels] = False
    return (sims - margin).clamp(min=0)[wrong].mean()


def hica_loss(z_img: Tensor, z_class: Tensor, labels: Tensor, z_roi: Tensor | None, roi_mask: Tensor | None,
              z_caption: Tensor | None, tau: float, lambda_local: float, lambda_cross: float, margin: float,
              use_global: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 2: L = L_global + λ1 L_local + λ2 L_cross (terms with weight 0, or no global term, skipped); the parts."""
    parts: dict[str, Tensor] = {}
    if use_global:
        parts["global"] = global_loss(z_img, z_class, labels, tau)
    if lambda_local and z_roi is not None:
        parts["local"] = lambda_local * local_loss(z_roi, roi_mask, z_caption, tau)
    if lambda_cross:
        parts["cross"] = lambda_cross * cross_loss(z_img, z_class, labels, margin)
    if not parts:
        raise ValueError("HiCA loss: every term is switched off")
    return sum(parts.values()), parts


def clip_loss(z_img: Tensor, z_txt: Tensor, tau: float) -> Tensor:
    """Symmetric InfoNCE of B (image, own text) pairs: mean of image→text and text→image cross-entropies."""
    logits = cosine(z_img, z_txt) / tau
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
