"""Pretrained weights for any timm model: from a local file or the hub, every tensor checked after loading.

Used by ``backbones.build_vit`` (EI's ViT towers) and ``timm_factory.create_timm_model`` (downstream classifiers).
``load_pretrained(create, arch, num_classes, weights)`` builds the model with ``create(pretrained=True, ...)`` and
never falls back to a random init:

- ``weights`` a local file (safetensors, .pt/.pth, .bin): read it, create the model through
  ``pretrained_cfg_overlay=dict(file=…, num_classes=<the file's head rows>, custom_load=False)`` — timm keeps the
  file's head (strict load) when the class count matches, otherwise drops it and loads the rest non-strictly — then
  compare every model tensor with the file's.
- ``weights`` None or ``"hub"``: timm's pretrained weights of ``arch`` (Hugging Face hub or URL); if the file is in
  the local hub cache afterwards, it is compared the same way.

``convert`` (optional) turns the raw state dict into exactly what timm loads (the architecture's checkpoint filter:
key renames, position-embedding resampling); then shapes must match too. Without it, a tensor whose shape differs
from the file's was resized by timm's own filter and is not compared. Skipped always: a re-initialised head, a
patch/stem convolution timm adapted to ``in_chans != 3``, BatchNorm's ``num_batches_tracked``. Every failure is
one ``WeightsError`` naming the file or hub id and the tensors at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from timm.models import get_pretrained_cfg
from timm.models import load_state_dict as timm_load_state_dict
from torch import Tensor, nn

from medrepro.errors import MedreproError, WeightsError

__all__ = ["HEAD_NAMES", "Convert", "head_rows", "load_pretrained", "read_state", "verify_loaded"]

_log = logging.getLogger(__name__)

#: classifier module names tried when timm has no pretrained config for the arch
HEAD_NAMES: tuple[str, ...] = ("head", "classifier", "fc", "head.fc")
#: raw state dict → the state dict timm loads into the model
Convert = Callable[[dict[str, Tensor]], dict[str, Tensor]]
_SHOWN = 5


def _cfg_names(arch: str, field: str) -> tuple[str, ...]:
    """``classifier`` / ``first_conv`` module names from timm's pretrained config of ``arch`` (empty if none)."""
    pcfg = get_pretrained_cfg(arch)
    value = getattr(pcfg, field, None) if pcfg is not None else None
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def head_rows(state: Mapping[str, Tensor], heads: Sequence[str]) -> int:
    """Classes of the first classifier in ``heads`` that ``state`` holds a 2-d weight for; 0 when it has none."""
    for head in heads:
        w = state.get(f"{head}.weight")
        if w is not None and w.ndim == 2:
            return int(w.shape[0])
    return 0


def read_state(path: str, arch: str) -> dict[str, Tensor]:
    """The state dict in ``path`` (timm's reader: safetensors, or a torch pickle with or without a wrapper)."""
    try:
        return timm_load_state_dict(path)
    except Exception as exc:
        raise WeightsError(f"{arch}: cannot read weights file {path}: {exc or type(exc).__name__}") from exc


def _under(key: str, modules: Sequence[str]) -> bool:
    return any(key.startswith(m + ".") for m in modules)


def _listed(items: list[str]) -> str:
    return "[" + ", ".join(items[:_SHOWN]) + (f", … ({len(items)} in all)" if len(items) > _SHOWN else "") + "]"


def verify_loaded(
    model: nn.Module,
    expected: Mapping[str, Tensor],
    *,
    arch: str,
    where: str,
    skip_head: bool,
    exact_shapes: bool,
) -> int:
    """Check that every model tensor (bar the skipped ones, see module docstring) equals ``expected``'s.

    Returns the number of tensors compared; raises one ``WeightsError`` listing the missing and differing ones.
    """
    heads = _cfg_names(arch, "classifier") or HEAD_NAMES
    # timm re-weights the stem convolution for in_chans != 3: it cannot equal the file's
    adapted = {f"{c}.weight" for c in _cfg_names(arch, "first_conv")} if getattr(model, "in_chans", 3) != 3 else set()
    missing: list[str] = []
    differ: list[str] = []
    resized: list[str] = []
    n = 0
    for key, value in model.state_dict().items():
        if (skip_head and _under(key, heads)) or key in adapted or key.endswith("num_batches_tracked"):
            continue
        ref = expected.get(key)
        if ref is None:
            missing.append(key)
        elif ref.shape != value.shape:
            shapes = f"{key} (file {tuple(ref.shape)}, model {tuple(value.shape)})"
            (differ if exact_shapes else resized).append(shapes)
        elif not torch.equal(value, ref.to(value.device, value.dtype)):
            differ.append(key)
        n += 1
    if missing or differ:
        raise WeightsError(
            f"{arch}: weights from {where} did not arrive (different architecture or checkpoint?): "
            f"{len(missing)} model tensors missing from the file {_listed(missing)}, "
            f"{len(differ)} different {_listed(differ)}"
        )
    if resized:
        _log.info("%s: %d tensors resized by timm's checkpoint filter, not compared: %s", arch, len(resized),
                  _listed(resized))
    return n


def _expected(raw: dict[str, Tensor], convert: Convert | None, arch: str, where: str) -> dict[str, Tensor]:
    if convert is None:
        return raw
    try:
        return convert(raw)
    except WeightsError as exc:  # one clear message; the file it is about added
        raise WeightsError(f"{exc} ({where})") from exc
    except MedreproError:  # already one clear message (e.g. a params error of the tower)
        raise
    except Exception as exc:  # a state dict of another architecture fails to convert
        raise WeightsError(f"{arch}: weights in {where} do not fit this architecture: {exc}") from exc


def _from_file(create: Callable[..., nn.Module], arch: str, num_classes: int, weights: str,
               convert: Convert | None) -> nn.Module:
    path = str(Path(weights).expanduser())
    if not Path(path).is_file():
        raise WeightsError(f"{arch}: weights file not found: {path}")
    expected = _expected(read_state(path, arch), convert, arch, path)
    file_classes = head_rows(expected, _cfg_names(arch, "classifier") or HEAD_NAMES)
    # num_classes in the overlay = the file's head: timm keeps it (strict load) when it matches, else drops it
    overlay = dict(file=path, num_classes=file_classes, custom_load=False)
    try:
        model = create(pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as exc:  # any loader failure becomes one clear message
        raise WeightsError(f"{arch}: cannot load weights file {path}: {exc}") from exc
    skip_head = file_classes != num_classes
    n = verify_loaded(model, expected, arch=arch, where=path, skip_head=skip_head, exact_shapes=convert is not None)
    _log.info("%s: %d tensors loaded from %s%s", arch, n, path, "; new head" if skip_head else "")
    return model


def _hub_cached_file(hub_id: str, filename: str | None) -> str | None:
    """Path of the hub file timm just loaded, if it is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in (filename,) if filename else ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, name)
        if isinstance(found, str):
            return found
    return None


def _from_hub(create: Callable[..., nn.Module], arch: str, num_classes: int, convert: Convert | None) -> nn.Module:
    pcfg = get_pretrained_cfg(arch)
    if arch.startswith("hf-hub:"):  # timm reads the model config from the hub repo itself
        hub_id, url, filename = arch.removeprefix("hf-hub:"), None, None
    else:
        hub_id = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
        url = getattr(pcfg, "url", None) if pcfg is not None else None
        filename = getattr(pcfg, "hf_hub_filename", None) if pcfg is not None else None
    where = " or ".join(s for s in (f"hf-hub:{hub_id}" if hub_id else "", url or "") if s)
    if not where:
        raise WeightsError(f"{arch}: timm knows no pretrained weights; set weights: /path/to/file")
    try:
        model = create(pretrained=True)
    except Exception as exc:
        raise WeightsError(
            f"{arch}: cannot load pretrained weights from {where}: {exc}. Offline? Download the file "
            f"elsewhere and set weights: /path/to/model.safetensors (HF_HUB_OFFLINE=1 avoids slow retries)"
        ) from exc
    cached = _hub_cached_file(hub_id, filename) if hub_id else None
    if cached is None:
        _log.warning("%s: loaded from %s; file not in the local hub cache, not re-checked", arch, where)
        return model
    expected = _expected(read_state(cached, arch), convert, arch, cached)
    skip_head = head_rows(expected, _cfg_names(arch, "classifier") or HEAD_NAMES) != num_classes
    n = verify_loaded(model, expected, arch=arch, where=f"{where} ({cached})", skip_head=skip_head,
                      exact_shapes=convert is not None)
    _log.info("%s: %d tensors loaded from %s", arch, n, where)
    return model


def load_pretrained(
    create: Callable[..., nn.Module],
    arch: str,
    num_classes: int,
    weights: str | None = None,
    *,
    convert: Convert | None = None,
) -> nn.Module:
    """``create(pretrained=True, **extra)`` with weights from ``weights`` (file; None or ``"hub"``: the hub), checked.

    ``create`` builds the model for ``arch`` with ``num_classes`` classes (its own kwargs bound) and passes ``extra``
    (``pretrained``, ``pretrained_cfg_overlay``) on to ``timm.create_model``. See the module docstring.
    """
    if weights is None or weights == "hub":
        return _from_hub(create, arch, num_classes, convert)
    return _from_file(create, arch, num_classes, weights, convert)
