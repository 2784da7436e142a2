"""A frozen KL autoencoder (diffusers ``AutoencoderKL``) between images and the latent space of the denoiser.

VAP-Diffusion builds on U-ViT, whose latent models encode images with the pretrained Stable Diffusion VAE
(``stabilityai/sd-vae-ft-ema``) and scale the latents by 0.18215. Both halves stay frozen here, as in U-ViT's
code; the paper calls the decoder "trainable" without saying how it is trained, so fine-tuning it would be a
step of its own.

Where the weights come from (never a random init):

- ``weights`` None: ``AutoencoderKL.from_pretrained(model)``, the hub id or its local cache (with
  ``HF_HUB_OFFLINE=1`` only the cache).
- ``weights`` a folder: ``from_pretrained(folder)``, diffusers' ``save_pretrained`` layout (``config.json`` +
  ``diffusion_pytorch_model.safetensors``); ``model`` is not read.
- ``weights`` a file: ``from_single_file(file, config=model)``, a ``.safetensors``/``.ckpt`` with original
  (LDM) or diffusers keys; ``model`` (hub id, cached when offline, or a local folder) gives the architecture.

A missing or unreadable file, an id that cannot be loaded, or a checkpoint that leaves any model tensor
unfilled or of another shape is one ``WeightsError`` naming the path or hub id (diffusers itself only warns
and initialises missing tensors at random).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from medrepro.config import VAE_DEFAULT_MODEL, VAE_DEFAULT_SCALE, VAEConfig
from medrepro.devices import resolve_device
from medrepro.errors import WeightsError

if TYPE_CHECKING:  # diffusers takes seconds to import: only when a VAE is loaded
    from diffusers import AutoencoderKL

__all__ = ["SD_VAE", "SD_VAE_SCALE", "LatentCodec", "VAEConfig", "load_vae"]

_log = logging.getLogger(__name__)

#: the VAE of VAP-Diffusion / U-ViT's latent models and its latent scaling factor (the defaults of VAEConfig)
SD_VAE = VAE_DEFAULT_MODEL
SD_VAE_SCALE = VAE_DEFAULT_SCALE


class LatentCodec(nn.Module):
    """A frozen ``AutoencoderKL`` in eval mode: images in [-1, 1] ↔ scaled latents.

    ``downsample`` is the spatial factor between images and latents (2 per down block after the first),
    ``latent_channels`` the channels of a latent. A shift factor in the VAE's config (SD3/Flux VAEs) is
    subtracted before scaling; the SD VAE has none.
    """

    def __init__(self, vae: AutoencoderKL, scale: float) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.scale = float(scale)
        shift = getattr(vae.config, "shift_factor", None)
        self.shift = float(shift) if shift is not None else 0.0
        self.in_channels = int(vae.config.in_channels)
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    def train(self, mode: bool = True) -> LatentCodec:
        """Stays in eval mode whatever a parent module asks: the codec is frozen."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def _check(self, x: Tensor, channels: int, what: str, spatial_multiple: int) -> None:
        if x.ndim != 4 or x.shape[1] != channels or not x.is_floating_point():
            raise ValueError(f"LatentCodec: {what} must be a float tensor (B, {channels}, H, W), got "
                             f"{x.dtype} {tuple(x.shape)}")
        if x.shape[2] % spatial_multiple or x.shape[3] % spatial_multiple:
            raise ValueError(f"LatentCodec: {what} H, W {tuple(x.shape[2:])} must be multiples of {spatial_multiple}")

    @torch.no_grad()
    def encode(self, images: Tensor, sample: bool = False, gen: torch.Generator | None = None) -> Tensor:
        """Scaled latents (B, latent_channels, H/downsample, W/downsample) of images in [-1, 1] (B, 3, H, W):
        the posterior mean, or a draw from the posterior with ``gen`` when ``sample``."""
        self._check(images, self.in_channels, "images", self.downsample)
        lo, hi = images.aminmax()
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"LatentCodec: images must lie in [-1, 1], got [{float(lo):.3g}, {float(hi):.3g}]")
        posterior = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
        z = posterior.sample(generator=gen) if sample else posterior.mean
        return (z - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [-1, 1] (clamped) from scaled latents."""
        self._check(latents, self.latent_channels, "latents", 1)
        z = latents.to(self.device, self.dtype) / self.scale + self.shift
        return self.vae.decode(z).sample.clamp(-1.0, 1.0)


def _checked(vae: AutoencoderKL, where: str, info: dict[str, Any] | None = None) -> AutoencoderKL:
    """``vae`` if every tensor came from the checkpoint; else WeightsError naming ``where``."""
    problems = []
    if info is not None:
        for key in ("missing_keys", "mismatched_keys", "error_msgs"):
            items = [str(k) for k in info.get(key) or []]
            if items:
                shown = ", ".join(items[:5]) + (f", … ({len(items)} in all)" if len(items) > 5 else "")
                problems.append(f"{key.replace('_', ' ')}: {shown}")
        if info.get("unexpected_keys"):
            _log.warning("%s: %d tensors of the checkpoint unused by AutoencoderKL", where,
                         len(info["unexpected_keys"]))
    meta = [name for name, t in (*vae.named_parameters(), *vae.named_buffers()) if t.is_meta]
    if meta and not problems:
        problems.append(f"not loaded: {', '.join(meta[:5])}")
    if problems:
        raise WeightsError(f"vae: {where} does not fill this AutoencoderKL (wrong or partial checkpoint?); "
                           + "; ".join(problems))
    return vae


def _offline_hint() -> str:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return (f" HF_HUB_OFFLINE is set: the id must be in the local hub cache ({constants.HF_HUB_CACHE}); "
                f"download it once online or set weights: to a local copy")
    return " Offline? Set HF_HUB_OFFLINE=1 and weights: to a local folder or file"


def _reason(exc: Exception) -> str:
    """The exception's message, without a final period, with a hint for diffusers' meta-tensor errors."""
    text = (str(exc) or type(exc).__name__).rstrip(".")
    return text + (" (tensors missing from the checkpoint?)" if "meta tensor" in text else "")


def load_vae(cfg: VAEConfig, device: torch.device | str = "cpu") -> LatentCodec:
    """The frozen ``LatentCodec`` of ``cfg`` on ``device`` (``auto`` allowed), weights in fp32."""
    from diffusers import AutoencoderKL

    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not path.exists():
            raise WeightsError(f"vae.weights: {path} not found (a diffusers save_pretrained folder or a "
                               f".safetensors/.ckpt file)")
        if path.is_dir():
            where = f"folder {path}"
            try:
                vae, info = AutoencoderKL.from_pretrained(str(path), output_loading_info=True)
            except Exception as exc:
                raise WeightsError(f"vae.weights: cannot load an AutoencoderKL from {where}: {_reason(exc)}") from exc
            vae = _checked(vae, where, info)
        else:
            where = f"file {path} (architecture from {cfg.model!r})"
            try:
                vae = AutoencoderKL.from_single_file(str(path), config=cfg.model)
            except Exception as exc:
                hint = "" if Path(cfg.model).expanduser().is_dir() else _offline_hint()
                raise WeightsError(f"vae.weights: cannot load an AutoencoderKL from {where}: {_reason(exc)}.{hint}"
                                   ) from exc
            vae = _checked(vae, where)
    else:
        local = Path(cfg.model).expanduser().is_dir()
        where = f"folder {cfg.model}" if local else f"hub id {cfg.model!r}"
        try:
            vae, info = AutoencoderKL.from_pretrained(cfg.model, output_loading_info=True)
        except Exception as exc:
            raise WeightsError(f"vae.model: cannot load the AutoencoderKL {cfg.model!r} from "
                               + (f"that folder: {_reason(exc)}" if local else
                                  f"the hub or its local cache: {_reason(exc)}.{_offline_hint()}")) from exc
        vae = _checked(vae, where, info)
    _log.info("vae: AutoencoderKL from %s", where)
    return LatentCodec(vae.to(resolve_device(str(device)), torch.float32), cfg.scale)
