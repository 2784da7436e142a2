"""Names of HiCA's runs and baselines (Tables I-VI): light, so report stages need not import the trainers."""

from __future__ import annotations

from medrepro.errors import ParamsError
from medrepro.hica.noise import KINDS as NOISE_KINDS

#: HiCA itself
METHOD = "hica"
#: Table II's ablations: each removes one term of Eq. 2
ABLATIONS = {"no_global": {"use_global": False}, "no_local": {"lambda_local": 0.0},
             "no_cross": {"lambda_cross": 0.0}}
#: Table IV: HiCA trained without the classes of ``hica.unseen.classes``
UNSEEN = "unseen"
#: Table V: HiCA on corrupted descriptors (``medrepro.hica.noise``)
NOISY = tuple(f"noise_{k}" for k in NOISE_KINDS)
VARIANTS = (*ABLATIONS, UNSEEN, *NOISY)
#: Table I's baselines
ZEROSHOT, CNN, TRANSFER = "zeroshot", "cnn", "transfer"
#: the zero-shot baseline's run: no labelled subset
UNLABELLED = "unlabelled"


def method_name(ablation: str | None) -> str:
    """``hica``, ``hica_<ablation>`` (Table II), ``hica_unseen`` (Table IV) or ``hica_noise_<kind>`` (Table V)."""
    if ablation is not None and ablation not in VARIANTS:
        raise ParamsError(f"HiCA variant must be one of {list(VARIANTS)}, got {ablation!r}")
    return METHOD if ablation is None else f"{METHOD}_{ablation}"
