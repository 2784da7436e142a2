"""What the JSON schema cannot express: lists naming other keys, layer ranges, lr order, repeats (``check_params``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from medrepro.config.ablation import parse_ablation
from medrepro.config.schema import validate
from medrepro.errors import ParamsError
from medrepro.layout import BASELINE_GENERATORS, FULL


def check_params(params: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Schema validation, then every cross-key and range check; the first problem raises, naming the key."""
    validate(params, source)
    problems = list(cross_key_problems(params))
    if problems:
        raise ParamsError(f"{source}: " + "; ".join(problems))


def _duplicates(key: str, values: Iterable[Any]) -> list[str]:
    return [f"{key} lists {v!r} {n} times" for v, n in Counter(map(str, values)).items() if n > 1]


def _listed_keys(key: str, values: Iterable[str], mapping_key: str, mapping: Mapping[str, Any]) -> list[str]:
    return [f"{key} lists {v!r}, which is not a key of {mapping_key} (it has: {', '.join(sorted(mapping))})"
            for v in values if v not in mapping]


def cross_key_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """What the schema cannot express: lists that name other keys, layer ranges, lr order, repeated entries."""
    ei, ds = params["ei"], params["downstream"]
    lists = {"seeds": params["seeds"], "datasets": params["datasets"], "splits.ratios": params["splits"]["ratios"],
             "splits.shots": params["splits"]["shots"], "ei.datasets": ei["datasets"], "ei.ablations": ei["ablations"],
             "ei.table3_methods": ei["table3_methods"], "ei.table7_methods": ei["table7_methods"],
             "ei.table8_methods": ei["table8_methods"], "downstream.methods": ds["methods"]}
    for key, values in lists.items():
        yield from _duplicates(key, values)
    yield from _listed_keys("datasets", params["datasets"], "data", params["data"])
    yield from (f"ei.datasets lists {d!r}, which datasets does not" for d in ei["datasets"]
                if d not in params["datasets"])
    yield from _listed_keys("downstream.methods", ds["methods"], "downstream.models", ds["models"])
    yield from _listed_keys("ei.table3_methods", ei["table3_methods"], "ei.baselines", ei["baselines"])
    yield from _diffusion_problems(params)
    yield from _hica_problems(params)
    for key, train in (("train", params["train"]), ("downstream.train", ds["train"]),
                       ("hica.train", params["hica"]["train"])):
        if train["lr_min"] > train["lr_max"]:
            yield f"{key}.lr_min ({train['lr_min']}) is above {key}.lr_max ({train['lr_max']})"
    if ei["datasets"] and FULL not in params["splits"]["ratios"]:
        yield (f"splits.ratios lacks {FULL}: EI's baselines and Tables 4, 6, 7, 8 start from the "
               "pre-adaptation on the whole train split")
    if ei["vfm_source"] == "given" and not ei["vfm"]["pretrained"]:
        yield "ei.vfm_source: given needs ei.vfm.pretrained: true (a randomly initialised VFM is not a given one)"
    yield from _caption_problems(params)
    if ei["vfm_source"] == "synthetic" and "synth_mm" not in params["data"]:
        yield "ei.vfm_source: synthetic pretrains on synth_mm renderings, but data.synth_mm is missing"
    yield from _layer_problems(ei)


def _caption_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """The prompt bank needs captions of the train split and of the unseen split, and a subset splits makes."""
    cap = params["captions"]
    yield from _duplicates("captions.splits", cap["splits"])
    if "train" not in cap["splits"]:
        yield "captions.splits must include train (the prompt bank holds training captions, VAP Sec. 2.3)"
    if cap["unseen_split"] not in cap["splits"]:
        yield f"captions.unseen_split {cap['unseen_split']!r} is not in captions.splits {cap['splits']}"
    from medrepro.data.splits import ratio_column, shot_column  # the column names the split stage writes

    subsets = ([ratio_column(r) for r in params["splits"]["ratios"]]
               + [shot_column(k) for k in params["splits"]["shots"]])
    if cap["bank_subset"] not in subsets:
        yield f"captions.bank_subset {cap['bank_subset']!r} is not a subset splits makes ({', '.join(subsets)})"


def _hica_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """HiCA's datasets must be run; its subsets must be columns the split stage writes."""
    from medrepro.data.splits import ratio_column, shot_column

    hica = params["hica"]
    yield from _duplicates("hica.datasets", hica["datasets"])
    yield from _duplicates("hica.subsets", hica["subsets"])
    yield from _duplicates("hica.ablations", hica["ablations"])
    yield from _duplicates("hica.noise.kinds", hica["noise"]["kinds"])
    yield from (f"hica.datasets lists {d!r}, which datasets does not" for d in hica["datasets"]
                if d not in params["datasets"])
    yield from (f"hica.unseen.datasets lists {d!r}, which hica.datasets does not" for d in hica["unseen"]["datasets"]
                if d not in hica["datasets"])
    made = ([ratio_column(r) for r in params["splits"]["ratios"]] + [shot_column(k) for k in params["splits"]["shots"]])
    yield from (f"hica.subsets lists {s!r}, which splits does not make ({', '.join(made)})" for s in hica["subsets"]
                if s not in made)
    yield from (f"hica.subsets lists {s!r}: the real-ratio subsets of splits.ratios are trained for table3 already "
                "(stage train_hica_ratio)" for s in hica["subsets"]
                if s in {ratio_column(r) for r in params["splits"]["ratios"]})
    yield from (f"hica.ablation_subsets lists {s!r}, which hica.subsets does not" for s in hica["ablation_subsets"]
                if s not in hica["subsets"])
    for key in ("unseen", "noise", "explain"):
        if hica[key]["subset"] not in hica["subsets"]:
            yield f"hica.{key}.subset {hica[key]['subset']!r} is not in hica.subsets"
    for key in ("cnn", "transfer"):
        if hica["baselines"][key] not in params["downstream"]["models"]:
            yield f"hica.baselines.{key} {hica['baselines'][key]!r} is not a key of downstream.models"
    transfer = params["downstream"]["models"].get(hica["baselines"]["transfer"], {})
    if hica["baselines"]["transfer_source"] == "given" and not transfer.get("pretrained"):
        yield "hica.baselines.transfer_source: given needs its downstream.models block to be pretrained: true"
    if hica["datasets"] and FULL not in params["splits"]["ratios"]:
        yield f"splits.ratios lacks {FULL}: HiCA's stage 1 and zero-shot baseline use the whole train split"
    if hica["rois"]["mode"] == "grid" and round(hica["rois"]["k"] ** 0.5) ** 2 != hica["rois"]["k"]:
        yield f"hica.rois.k {hica['rois']['k']} must be a square number for mode grid"
    if hica["roi_source"] == "full":  # the ROI copy must add pixels and map boxes by one whole scale
        for d in hica["datasets"]:
            size = (params["data"].get(d) or {}).get("image_size")
            if size and (hica["roi_image_size"] % size or hica["roi_image_size"] <= size):
                yield (f"hica.roi_image_size {hica['roi_image_size']} must be a whole multiple (above 1) of "
                       f"data.{d}.image_size {size} with hica.roi_source full")


def _diffusion_problems(params: Mapping[str, Any]) -> Iterable[str]:
    """Synthesis needs its generators; U-ViT sizes must tile the image; subsets must exist."""
    diff, ds = params["diffusion"], params["downstream"]
    yield from _duplicates("diffusion.variants", diff["variants"])
    yield from _duplicates("synthesis.generators", params["synthesis"]["generators"])
    yield from (f"synthesis.generators lists {g!r}, which diffusion.variants (the generators trained) does not"
                for g in params["synthesis"]["generators"] if g not in (*diff["variants"], *BASELINE_GENERATORS))
    gm = params["generation_metrics"]
    if gm["extractor"] == "classifier" and gm["classifier"] not in ds["methods"]:
        yield (f"generation_metrics.classifier {gm['classifier']!r} is not in downstream.methods "
               f"({', '.join(ds['methods'])}): its real-data run gives the features")
    if ds["synthetic"]["per_class"] > params["synthesis"]["per_class"]:
        yield (f"downstream.synthetic.per_class ({ds['synthetic']['per_class']}) is above synthesis.per_class "
               f"({params['synthesis']['per_class']}), the number synthesised")
    from medrepro.data.splits import ratio_column

    ratios = [ratio_column(r) for r in params["splits"]["ratios"]]
    if diff["train_subset"] not in ratios:
        yield f"diffusion.train_subset {diff['train_subset']!r} is not a subset splits makes ({', '.join(ratios)})"
    syn_ratios = params["synthesis"]["ratios"]
    yield from _duplicates("synthesis.ratios", syn_ratios)
    yield from (f"synthesis.ratios lists {r}, which splits.ratios does not" for r in syn_ratios
                if r not in params["splits"]["ratios"])
    gd = params["synthesis"]["generator_data"]
    if gd["ratios"] and gd["variant"] not in params["synthesis"]["generators"]:
        yield (f"synthesis.generator_data.variant {gd['variant']!r} is not in synthesis.generators: its table3 "
               "rows are the comparison's generator trained on diffusion.train_subset")
    for r in gd["ratios"]:
        if r not in syn_ratios:
            yield (f"synthesis.generator_data.ratios lists {r}, which synthesis.ratios does not (its table3 rows "
                   "are the other half of the comparison)")
        elif ratio_column(r) == diff["train_subset"]:
            yield (f"synthesis.generator_data.ratios lists {r}: diffusion.train_subset already trains on it "
                   "(the table compares generators trained on more real data with those trained on the subset)")
    yield from _duplicates("generation_metrics.generators", gm["generators"])
    yield from (f"generation_metrics.generators lists {g!r}, which diffusion.variants (the generators trained) "
                "does not" for g in gm["generators"] if g not in (*diff["variants"], *BASELINE_GENERATORS))
    size = diff["image_size"] // (8 if diff["space"] == "latent" else 1)  # SD VAE: 8× downsampling
    uvit = diff["uvit"]
    if size % uvit["patch_size"]:
        yield (f"diffusion.uvit.patch_size {uvit['patch_size']} does not tile the {diff['space']} image of "
               f"{size} px (diffusion.image_size {diff['image_size']})")
    if uvit["dim"] % uvit["heads"]:
        yield f"diffusion.uvit.dim {uvit['dim']} is not a multiple of diffusion.uvit.heads {uvit['heads']}"


def _layer_problems(ei: Mapping[str, Any]) -> Iterable[str]:
    """[INT] layers (EI Eq. 1–2) inside the tower: int_layer in 1..depth, insert_layer in 0..depth-1."""
    ablations = []
    for setting in ei["ablations"]:
        try:
            ablations.append((f"ei.ablations entry {setting!r}", *parse_ablation(setting)))
        except ParamsError as exc:
            yield str(exc)
    depth = ei["vfm"]["kwargs"].get("depth")
    if not isinstance(depth, int):
        return  # the arch's own depth: checked when the tower is built
    settings = [("ei.int_layer", "int_layer", ei["int_layer"]), ("ei.insert_layer", "insert_layer",
                                                                  ei["insert_layer"]), *ablations]
    for where, knob, value in settings:
        if knob == "int_layer" and value is not None and not 1 <= value <= depth:
            yield f"{where}: int_layer {value} is outside 1..{depth} (ei.vfm.kwargs.depth is {depth})"
        if knob == "insert_layer" and not 0 <= value < depth:
            yield f"{where}: insert_layer {value} is outside 0..{depth - 1} (ei.vfm.kwargs.depth is {depth})"
