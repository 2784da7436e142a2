"""The frozen latent codec on a tiny random AutoencoderKL: loading from a folder or a single file, shapes,
determinism, equality with the original model, and WeightsError instead of a random init."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from medrepro.errors import ParamsError, WeightsError
from medrepro.vap.vae import LatentCodec, VAEConfig, load_vae

SCALE = 0.5
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[AutoencoderKL, Path]:
    """A random 2-block AutoencoderKL and its save_pretrained folder."""
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                        norm_num_groups=8, sample_size=32).eval()
    folder = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(folder)
    return vae, folder


def images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_codec_from_folder_matches_the_model(tiny: tuple[AutoencoderKL, Path]) -> None:
    vae, folder = tiny
    codec = load_vae(VAEConfig(model="not/read", weights=str(folder), scale=SCALE), "cpu")
    assert isinstance(codec, LatentCodec) and (codec.latent_channels, codec.downsample) == (4, 2)
    x = images()
    z = codec.encode(x)
    assert z.shape == (2, 4, 16, 16)  # 32 px, one downsampling between two blocks
    assert torch.equal(codec.encode(x), z)  # posterior mean: deterministic
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        want = vae.decode(mean).sample.clamp(-1, 1)
    torch.testing.assert_close(z, mean * SCALE)
    out = codec.decode(z)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out, want)
    draw = codec.encode(x, sample=True, gen=torch.Generator().manual_seed(3))
    assert torch.equal(draw, codec.encode(x, sample=True, gen=torch.Generator().manual_seed(3)))
    assert not torch.equal(draw, z)
    codec.train()  # frozen: stays in eval mode, no gradients
    assert not codec.training and not codec.vae.training
    assert not any(p.requires_grad for p in codec.parameters())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        codec.encode((x + 1) * 127.5)
    with pytest.raises(ValueError, match="multiples of 2"):
        codec.encode(x[..., :31, :31])


def test_codec_from_single_file(tiny: tuple[AutoencoderKL, Path], tmp_path: Path) -> None:
    vae, folder = tiny
    file = tmp_path / "tiny-vae.safetensors"
    shutil.copy(folder / WEIGHTS, file)
    codec = load_vae(VAEConfig(model=str(folder), weights=str(file), scale=SCALE), "cpu")  # config from model
    x = images()
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
    torch.testing.assert_close(codec.encode(x), mean * SCALE)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_missing_path_and_uncached_hub_id_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "vae.safetensors"
    with pytest.raises(WeightsError, match=re.escape(str(missing))):
        load_vae(VAEConfig(weights=str(missing)), "cpu")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time
    hub_id = "medrepro-tests/no-such-vae"
    with pytest.raises(WeightsError, match=rf"'{re.escape(hub_id)}'.*HF_HUB_OFFLINE is set"):
        load_vae(VAEConfig(model=hub_id), "cpu")
    with pytest.raises(ParamsError, match="scale"):
        VAEConfig(scale=0.0)


@pytest.mark.parametrize("defect", ["folder_lacks_tensor", "file_lacks_tensor", "corrupt_file"])
def test_partial_or_corrupt_checkpoint_is_never_random_init(tiny: tuple[AutoencoderKL, Path], tmp_path: Path,
                                                            defect: str) -> None:
    _, folder = tiny
    state = load_file(folder / WEIGHTS)
    del state["decoder.conv_out.weight"]
    if defect == "folder_lacks_tensor":  # diffusers alone would only warn and initialise it at random
        target = tmp_path / "partial"
        shutil.copytree(folder, target)
        save_file(state, target / WEIGHTS)
        pattern = rf"folder {re.escape(str(target))} .*decoder\.conv_out\.weight"
    else:
        target = tmp_path / "vae.safetensors"
        if defect == "file_lacks_tensor":
            save_file(state, target)
        else:
            target.write_bytes(b"\x00" * 64)
        pattern = rf"file {re.escape(str(target))}"
    with pytest.raises(WeightsError, match=pattern):
        load_vae(VAEConfig(model=str(folder), weights=str(target)), "cpu")
