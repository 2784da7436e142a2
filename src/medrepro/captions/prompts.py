"""VAPS prompt templates per imaging modality, versioned (VAP-Diffusion Sec. 2.2).

The paper gives Question¹–³ for dermoscopy only; the other modalities adapt the same three questions (subject,
lesion and background words, the modality's imaging characteristics). Changing any text here must bump
``PROMPT_VERSION``: it is part of every cache key and of every caption row.
"""

from __future__ import annotations

from dataclasses import dataclass

from medrepro.errors import ParamsError

PROMPT_VERSION = "vaps-1"
STEPS = (1, 2, 3)


@dataclass(frozen=True)
class Modality:
    """One imaging modality: the words its prompts use and how the ``attributes`` backend measures it."""

    name: str
    subject: str  # "a skin lesion image"
    lesion: str  # what a finding is called ("lesion", "deposit", "nodule")
    background: str  # "skin", "retina"
    knowledge: str  # step 2: the modality's appearance variety (paper: "Skin lesions may present with …")
    kind: str  # enface | cross_section (how the attributes backend measures it)
    polarity: str  # bright | dark | any: lesions against their surroundings
    threshold: float  # luminance difference (enface) or relative lift (cross_section) of a finding
    min_px: int  # smallest blob counted, in pixels
    landmark: str | None = None  # anatomy set aside as not a lesion (optic_disc)
    window: float = 0.5  # enface: local-background median window, as a fraction of the image side

    def question(self, step: int) -> str:
        """Question¹ (initial impression), Question² (modality knowledge, no image), Question³ (t_mix)."""
        if step == 1:
            return (f"You are an AI visual assistant observing {self.subject}. Describe the information you observe "
                    "from the image without providing any conclusions.")
        if step == 2:
            return (f"{self.knowledge} Can you provide the specific aspects of these features and how they manifest "
                    "in different ways?")
        if step == 3:
            return ("Based on this image itself, please describe it shortly and concisely, according to the shape, "
                    "color, size (due to the unavailability of quantitative dimensions, you can just describe their "
                    f"approximate proportion in the whole image), and texture of the {self.lesion} and "
                    f"{self.background} background.")
        raise ValueError(f"VAPS has steps 1, 2, 3, not {step}")

    def step3_prompt(self, t1: str, t2: str) -> str:
        """Question³ with the answers of steps 1 and 2 as context (t_mix = MLLM(t¹, t², X₀, Question³))."""
        return (f"Your first impression of the image was: {t1}\nWhat is known about this kind of image: {t2}\n"
                f"{self.question(3)}")


def _m(name, subject, lesion, background, knowledge, kind="enface", polarity="dark", threshold=0.1, min_px=4,
       landmark=None, window=0.5) -> Modality:
    return Modality(name, subject, lesion, background, knowledge, kind, polarity, threshold, min_px, landmark, window)


MODALITIES: dict[str, Modality] = {m.name: m for m in (
    _m("dermoscopy", "a skin lesion image", "lesion", "skin",
       "Skin lesions may present with diverse shapes, colors, sizes, and texture features. The surrounding skin may "
       "also appear normal or show signs of inflammation, pigmentation, or other changes."),
    _m("clinical_skin", "a clinical photograph of a skin lesion", "lesion", "skin",
       "Skin lesions photographed without a dermatoscope may present with diverse shapes, colors, sizes, and "
       "surface textures, under varying light. The surrounding skin may appear normal, red, pigmented or scaly."),
    _m("colour_fundus", "a colour fundus photograph of the retina", "lesions", "retinal",
       "Retinal lesions in colour fundus photographs, such as drusen, exudates or haemorrhages, may present with "
       "diverse shapes, colors (yellow, white, orange, red), sizes and textures; the optic disc and vessels are "
       "normal anatomy. The retinal background may look evenly orange-red, dim or bright, smooth or granular.",
       polarity="bright", threshold=0.12, min_px=3, landmark="optic_disc", window=0.25),  # small lesions, vignetting
    _m("oct", "an optical coherence tomography (OCT) cross-section of the retina", "layers and pockets", "retinal",
       "Retinal OCT B-scans show layered bright and dark bands whose slope, thickness and regularity vary; fluid "
       "appears as dark pockets that lift the layers, deposits as bumps of the bottom bright band; speckle makes "
       "the texture grainy.", kind="cross_section", threshold=0.035, min_px=3),
    _m("knee_mri", "a knee MRI slice", "abnormality", "joint",
       "Knee MRI slices show bone, cartilage, ligaments, menisci and fluid with diverse shapes, intensities, sizes "
       "and textures; tears and effusions may appear as bright or dark irregular regions.", polarity="any"),
    _m("chest_xray", "a chest X-ray image", "opacity", "lung",
       "Chest X-ray findings may present as opacities, nodules, lines or lucencies of diverse shapes, densities, "
       "sizes and textures; the lung fields, heart, diaphragm and ribs form the background.", polarity="bright"),
    _m("breast_ultrasound", "a breast ultrasound image", "mass", "breast tissue",
       "Breast masses in ultrasound may present with diverse shapes (round, oval, irregular), echogenicity, sizes, "
       "margins and posterior features; the surrounding tissue shows layered speckled texture.", polarity="dark"),
    _m("colonoscopy", "a colonoscopy image", "lesion", "mucosal",
       "Colorectal lesions such as polyps may present with diverse shapes, colors, sizes and surface textures; the "
       "surrounding mucosa may look pink, red, glossy, vascular or inflamed.", polarity="any"),
)}

#: the imaging modality of each dataset's image column (facts of the datasets)
DATASET_MODALITIES: dict[str, dict[str, str]] = {
    "synth_mm": {"fundus": "colour_fundus", "oct": "oct"},
    "mmc_amd": {"cfp": "colour_fundus", "oct": "oct"},
    "derm7pt": {"derm": "dermoscopy", "clinic": "clinical_skin"},
    "mrnet": {"axial": "knee_mri", "coronal": "knee_mri", "sagittal": "knee_mri"},
    "isic2018": {"image": "dermoscopy"},
    "isic2019": {"image": "dermoscopy"},
    "chestxray14": {"image": "chest_xray"},
    "cxr_pneumonia": {"image": "chest_xray"},
    "busi": {"image": "breast_ultrasound"},
}


def modality_of(dataset: str, column: str) -> Modality:
    """The prompt set of one dataset image column (``path_<column>``)."""
    try:
        return MODALITIES[DATASET_MODALITIES[dataset][column]]
    except KeyError as exc:
        raise ParamsError(f"no VAPS prompts for dataset {dataset!r} modality {column!r} "
                          f"(medrepro.captions.prompts.DATASET_MODALITIES)") from exc
