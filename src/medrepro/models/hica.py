"""HiCA's vision-language classifier (Sec. III): image towers and a text tower mapped to one space by projection
heads; a sample is classified by the class descriptor its image embedding is most similar to.

- Image side: one timm ViT per modality (``ei.vfm``'s tower in the embedded default) → pooled [CLS] → a linear
  projection per modality; or (``hica.clip``, paper profile) the image tower of one open_clip model per modality,
  whose output is already CLIP's projected embedding, with the heads initialised to the identity. On a multimodal
  dataset the sample's embedding is the mean of its modalities' unit embeddings (every modality votes equally; the
  loss sees the re-normalised mean).
- Text side: sentence embeddings of a frozen text encoder (computed once per run: ``medrepro.hica.text``), then one
  trainable linear projection. Class descriptor j = the mean of its descriptors' sentence embeddings.
- Logits: sim(z^img, z_j^text) / τ (Eq. 3's similarity); zero-shot = the same argmax before any HiCA training.
- ``training_loss``: Eq. 2 on the batch, ROIs (``medrepro.models.hica_rois``) cropped from each modality's augmented
  image
  and embedded by the same tower, paired with the sample's caption embedding (batch key ``CAPTION``). Where the
  data carry lesion masks (batch keys ``mask_key(m)`` and ``has_mask_key(m)``, augmented with their images) the
  ROI mode decides whether the boxes come from them. Where a batch carries a larger copy of a modality's images
  (``roi_image_key(m)``, ``hica.roi_source: full``) the boxes found on the image are scaled to it and the crops cut
  from it (Sec. III-B.2: ROIs cropped from the image, not from the classifier's thumbnail).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.models.clip_towers import identity_
from medrepro.models.hica_losses import cosine, hica_loss
from medrepro.models.hica_rois import Box, RoiConfig, crops, training_boxes

#: batch key of the per-sample caption embeddings (B, text_dim) added by ``medrepro.hica.data``
CAPTION = "_caption"


def mask_key(modality: str) -> str:
    """Batch key of a modality's augmented lesion masks: (B, H, W) bool on the CPU (``medrepro.hica.data``)."""
    return f"_mask_{modality}"


def roi_image_key(modality: str) -> str:
    """Batch key of a modality's augmented ROI image copy: (B, C, s·H, s·W), a whole multiple s of the image."""
    return f"_roi_image_{modality}"


def has_mask_key(modality: str) -> str:
    """Batch key of (B,) bool: whether each sample has a mask of ``modality`` (False: its mask is all zeros)."""
    return f"_has_mask_{modality}"


@dataclass(frozen=True)
class HiCALossConfig:
    """Eq. 2's knobs: τ, λ1 (local), λ2 (cross), δ, and which terms are on (Table II's ablations)."""

    tau: float = 0.07
    lambda_local: float = 0.5
    lambda_cross: float = 0.5
    margin: float = 0.2
    use_global: bool = True

    def as_dict(self) -> dict[str, float | bool]:
        return asdict(self)


class HiCAModel(nn.Module):
    """Towers + projection heads + the class descriptors' sentence embeddings (a buffer)."""

    def __init__(self, towers: Mapping[str, nn.Module], feat_dim: int, class_text: Tensor, embed_dim: int,
                 loss: HiCALossConfig, rois: RoiConfig, roi_size: int, identity_heads: bool = False) -> None:
        """``identity_heads``: towers already in one space (CLIP's own projections): square heads initialised to
        the identity, so the untrained model is CLIP's zero-shot classifier (``embed_dim`` = that space's)."""
        super().__init__()
        self.modalities = list(towers)
        self.towers = nn.ModuleDict(dict(towers))
        self.img_proj = nn.ModuleDict({m: nn.Linear(feat_dim, embed_dim) for m in towers})
        self.text_proj = nn.Linear(class_text.shape[-1], embed_dim)
        if identity_heads:
            for head in (*self.img_proj.values(), self.text_proj):
                identity_(head)
        self.register_buffer("class_text", class_text.float().clone())
        self.loss_cfg, self.rois, self.roi_size = loss, rois, roi_size

    def tower_embed(self, m: str, x: Tensor) -> Tensor:
        """Unit image-space embedding of images ``x`` of modality ``m`` (whole images or ROI crops)."""
        vit = self.towers[m]
        feats = vit.forward_head(vit.forward_features(x), pre_logits=True)  # pooled [CLS] after the final norm
        return F.normalize(self.img_proj[m](feats), dim=-1)

    def embed_images(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, d) unit image embeddings: the re-normalised mean of the modalities' unit embeddings."""
        return F.normalize(torch.stack([self.tower_embed(m, batch[m]) for m in self.modalities]).mean(0), dim=-1)

    def embed_text(self, sentence: Tensor) -> Tensor:
        """Unit embeddings of sentence embeddings (..., text_dim)."""
        return F.normalize(self.text_proj(sentence), dim=-1)

    def class_embeddings(self) -> Tensor:
        return self.embed_text(self.class_text)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Class logits sim(z^img, z_j^text) / τ (B, C)."""
        return cosine(self.embed_images(batch), self.class_embeddings()) / self.loss_cfg.tau

    def boxes(self, grey: np.ndarray, mask: np.ndarray | None = None) -> list[Box]:
        """ROIs of one (H, W) image and its (H, W) lesion mask, None where it has none (``rois.training_boxes``)."""
        return training_boxes(grey, self.rois, mask)

    def roi_embeddings(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(B, K·M, d) unit ROI embeddings of every modality and their (B, K·M) mask (False = padding)."""
        k, outs, masks = self.rois.k, [], []
        for m in self.modalities:
            x = batch[m]
            grey = x.detach().float().mean(1).cpu().numpy()  # boxes on the augmented image (scale-invariant rule)
            lesion, has = batch.get(mask_key(m)), batch.get(has_mask_key(m))
            lesions = [lesion[i].numpy() if lesion is not None and has[i] else None for i in range(len(x))]
            src, f = roi_source(x, batch.get(roi_image_key(m)))
            cropped = [crops(img, scale_boxes(self.boxes(g, mk), f), k, self.roi_size)
                       for img, g, mk in zip(src, grey, lesions, strict=True)]
            patches = torch.stack([c for c, _ in cropped])  # (B, K, C, s, s)
            mask = torch.stack([v for _, v in cropped]).to(x.device)
            z = self.tower_embed(m, patches.flatten(0, 1)).view(len(x), k, -1)
            outs.append(z)
            masks.append(mask)
        return torch.cat(outs, 1), torch.cat(masks, 1)

    def training_loss(self, batch: Mapping[str, Tensor], y: Tensor) -> Tensor:
        """Eq. 2 on one batch (the runner's custom-loss hook)."""
        c = self.loss_cfg
        z_img, z_class = self.embed_images(batch), self.class_embeddings()
        z_roi = roi_mask = z_cap = None
        if c.lambda_local:
            z_roi, roi_mask = self.roi_embeddings(batch)
            z_cap = self.embed_text(batch[CAPTION])
        total, _ = hica_loss(z_img, z_class, y, z_roi, roi_mask, z_cap, c.tau, c.lambda_local, c.lambda_cross,
                             c.margin, c.use_global)
        return total


def roi_source(x: Tensor, big: Tensor | None) -> tuple[Tensor, int]:
    """The images ROI crops are cut from and their scale over ``x``: ``big`` (a whole multiple of ``x``'s size,
    same samples) where given, else ``x`` itself."""
    if big is None:
        return x, 1
    f = big.shape[-1] // x.shape[-1]
    if big.shape[:2] != x.shape[:2] or f < 1 or big.shape[-2:] != (f * x.shape[-2], f * x.shape[-1]):
        raise ValueError(f"ROI image copy of shape {tuple(big.shape)} is not a whole multiple of the images' "
                         f"{tuple(x.shape)}")
    return big, f


def scale_boxes(boxes: list[Box], f: int) -> list[Box]:
    """Boxes (y0, x0, y1, x1) of an image in the coordinates of its copy ``f`` times larger."""
    return boxes if f == 1 else [(y0 * f, x0 * f, y1 * f, x1 * f) for y0, x0, y1, x1 in boxes]


def class_text_embedding(descriptors: Sequence[Sequence[int]], sentences: Tensor) -> Tensor:
    """(C, text_dim): per class the mean of the sentence embeddings of its descriptors (row indices)."""
    if any(len(d) == 0 for d in descriptors):
        raise ValueError("every class needs at least one descriptor")
    return torch.stack([sentences[list(d)].mean(0) for d in descriptors])
