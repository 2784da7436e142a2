"""diffusers schedulers: the training noise (VAP-Diffusion Eq. 1) and the samplers (DPM-Solver++, DDIM)."""

from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from medrepro.config import NoiseConfig
from medrepro.errors import ParamsError


def _betas(noise: NoiseConfig) -> dict[str, object]:
    return {"num_train_timesteps": noise.num_train_timesteps, "beta_start": noise.beta_start,
            "beta_end": noise.beta_end, "beta_schedule": noise.beta_schedule}


def training_scheduler(noise: NoiseConfig) -> DDPMScheduler:
    """q(X_t | X_0) of Eq. 1; the denoiser predicts ``noise.prediction`` (ε in Eq. 2/3)."""
    return DDPMScheduler(**_betas(noise), prediction_type=noise.prediction)


def sampler(noise: NoiseConfig, name: str, steps: int, thresholding: bool = False) -> SchedulerMixin:
    """A fresh sampler over the training schedule with ``steps`` inference steps (upstream: DPM-Solver++, 50).
    ``thresholding``: the predicted x_0 is kept inside [-1, 1] at every step (dynamic thresholding, Saharia et al.
    2022, for DPM-Solver++; clipping for DDIM) — for pixel space, where x_0 is an image."""
    if name == "dpmsolver++":
        s = DPMSolverMultistepScheduler(**_betas(noise), algorithm_type="dpmsolver++", solver_order=2,
                                        prediction_type=noise.prediction, thresholding=thresholding,
                                        sample_max_value=1.0)
    elif name == "ddim":
        s = DDIMScheduler(**_betas(noise), prediction_type=noise.prediction, clip_sample=thresholding,
                          set_alpha_to_one=False)
    else:
        raise ParamsError(f"diffusion.sample.sampler: unknown sampler {name!r} (dpmsolver++ | ddim)")
    s.set_timesteps(steps)
    return s
