"""Premise signature of HiCA's local term (Eq. 4) on synth_mm: do ROI crops resolve drusen that the global view
does not, and do the ROIs land on them?

Renders fresh fundus images with synth_mm's own renderer (``data.synth_mm``'s gen_size, difficulty, leak; half with
drusen) and takes the drusen mask from a noise-free re-render of the same seed with and without drusen. Features
are the seed-0 stage-1 fundus tower's (the tower stage 2 starts from); boxes follow training's rule
(``hica.rois``) on the image at the classifier cache's size. Prints the share of drusen images with an ROI on a
druse (boxes found on the cache image, as training does, and on the gen_size image), how often the first ROI holds
the optic disc, and test AUCs of a drusen linear probe (fit on half, tested on the other) on: the global view; the
mean ROI-crop embedding with crops cut from the cache (``hica.roi_source: cache``) or from the gen_size image
(``full``: the same boxes scaled, or boxes found on the gen_size image); oracle ROIs at the drusen (for images
without drusen: where that seed's drusen would be) cut at either size.

Run in a folder whose stage 1 has run for seed 0, e.g. the hica3 experiment's (one thread, about 30 s):
``cd experiments/hica3 && python ../../bench/hica_roi_premise.py`` (``--help`` lists the inputs and their defaults).
"""
import argparse

import numpy as np
import torch
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medrepro.config import load_config
from medrepro.data import synth_mm as S
from medrepro.data.images import resize_square
from medrepro.hica.runs import hica_inputs
from medrepro.models.hica_rois import RoiConfig, crops, mask_boxes, training_boxes

# Boxes found on the cache-size image are scaled by this factor to cut from (or compare with) the gen_size image.
CACHE_TO_GEN = 2
STAT_KEYS = ("n_dr", "img_hit32", "img_hit64", "druse", "druse_hit32", "druse_hit64", "first_disc32", "first_disc64")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="base config (default: %(default)s)")
    p.add_argument("--config", default="config/experiments/hica3.yaml",
                   help="experiment config layered on --params (default: %(default)s)")
    p.add_argument("--shot", default="shot_5",
                   help="few-shot split whose stage-1 model is loaded (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task split and stage-1 run (default: %(default)s)")
    p.add_argument("-n", "--n-images", type=int, default=400, help="images to render (default: %(default)s)")
    p.add_argument("--draw-seed", type=int, default=123,
                   help="seed of the generator drawing per-image seeds (default: %(default)s)")
    return p.parse_args()


def render_with_mask(seed: int, drusen: bool, d: dict, contrast: float, noise: float, size: int):
    """Render one image as synth_mm does, plus its drusen mask at gen_size and at the cache size.

    The mask comes from noise-free, smooth-texture re-renders of the same seed with and without drusen, so images
    without drusen get the mask of where that seed's drusen would be.
    """
    gen = d["gen_size"]
    attrs = S.sample_attributes(np.random.default_rng(seed + 1))
    img = S.render_fundus(np.random.default_rng(seed), gen, drusen, False, attrs, contrast, noise, d["leak"])
    clean = dict(attrs, texture="smooth")
    a0 = S.render_fundus(np.random.default_rng(seed), gen, True, False, clean, contrast, 0.0, d["leak"])
    b0 = S.render_fundus(np.random.default_rng(seed), gen, False, False, clean, contrast, 0.0, d["leak"])
    dm64 = np.abs(a0.astype(int) - b0.astype(int)).max(-1) > 20
    dm32 = resize_square(dm64[..., None].astype(np.uint8) * 255, size)[..., 0] > 127
    return img, dm64, dm32


def disc_offset(seed: int) -> tuple[float, float]:
    """The optic disc's offset (dx, dy) in [-1, 1] coordinates, replaying the renderer's first draws for ``seed``."""
    r = np.random.default_rng(seed)
    r.uniform(0.92, 1.08)
    r.uniform(0.9, 1.1, size=3)
    dx, dy = 0.5 + r.uniform(-0.05, 0.05), r.uniform(-0.08, 0.08)
    return dx, dy


def on_disc(box, dx: float, dy: float, s: int) -> bool:
    """Whether ``box`` (y0, x0, y1, x1) on an ``s``-px image holds the optic disc centre."""
    return box[0] <= int((dy + 1) / 2 * s) < box[2] and box[1] <= int((dx + 1) / 2 * s) < box[3]


def scaled(boxes, f: int) -> list[tuple]:
    return [tuple(f * t for t in b) for b in boxes]


def normalise(a: np.ndarray, mean, std) -> torch.Tensor:
    """HWC uint8 image -> CHW float tensor normalised like the classifier cache."""
    return (torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1) - mean[0]) / std[0]


def embed(vit, x: torch.Tensor) -> torch.Tensor:
    return vit.forward_head(vit.forward_features(x), pre_logits=True)


def mean_crop_embedding(vit, src: torch.Tensor, boxes, roi: RoiConfig, roi_size: int) -> torch.Tensor:
    """Mean embedding of the valid ROI crops cut from ``src`` at ``boxes``."""
    c, v = crops(src, boxes, roi.k, roi_size)
    return embed(vit, c[v]).mean(0)


def in_box(ys: np.ndarray, xs: np.ndarray, box, f: int) -> bool:
    """Whether any pixel (ys, xs) of the gen_size image lies in ``box`` scaled by ``f``."""
    return ((ys >= box[0] * f) & (ys < box[2] * f) & (xs >= box[1] * f) & (xs < box[3] * f)).any()


def add_hit_stats(st: dict, dm64: np.ndarray, b32, b64) -> None:
    """Count drusen (connected components of ``dm64``) and whether the ROIs touch them, into ``st``."""
    st["n_dr"] += 1
    lab, n = ndimage.label(dm64)
    st["druse"] += n
    for j in range(1, n + 1):
        ys, xs = np.nonzero(lab == j)
        st["druse_hit32"] += any(in_box(ys, xs, b, CACHE_TO_GEN) for b in b32)
        st["druse_hit64"] += any(in_box(ys, xs, b, 1) for b in b64)
    ys, xs = np.nonzero(dm64)
    st["img_hit32"] += any(in_box(ys, xs, b, CACHE_TO_GEN) for b in b32)
    st["img_hit64"] += any(in_box(ys, xs, b, 1) for b in b64)


def probe_auc(features: list[torch.Tensor], y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    """Test AUC of a logistic-regression drusen probe fit on the ``tr`` rows and scored on the ``te`` rows."""
    fe = torch.stack(features).numpy()
    clf = LogisticRegression(max_iter=3000).fit(fe[tr], y[tr])
    return roc_auc_score(y[te], clf.predict_proba(fe[te])[:, 1])


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.params, args.config)
    d = cfg.data["synth_mm"]
    data, names, desc, setup = hica_inputs(cfg, "synth_mm", args.shot, args.seed)
    model = setup.model(torch.zeros(len(names), setup.text_tower.dim)).eval()
    vit = model.towers["fundus"]
    roi = RoiConfig(**cfg.hica.rois)
    print(roi)
    mean, std = data.images.mean, data.images.std
    gen, size = d["gen_size"], d["image_size"]
    contrast, noise = float(np.clip(1 - 0.6 * d["difficulty"], 0.2, 1)), 0.02 + 0.1 * d["difficulty"]
    rng0 = np.random.default_rng(args.draw_seed)
    N = args.n_images
    st = dict.fromkeys(STAT_KEYS, 0)
    G, O32, O64, R32, R64, H64, Y = [], [], [], [], [], [], []
    for i in range(N):
        drusen = i % 2 == 0
        seed = int(rng0.integers(1 << 31))
        img, dm64, dm32 = render_with_mask(seed, drusen, d, contrast, noise, size)
        dx, dy = disc_offset(seed)
        x32, x64 = normalise(resize_square(img, size), mean, std), normalise(img, mean, std)
        b32 = training_boxes(x32.mean(0).numpy(), roi)
        b64 = training_boxes(x64.mean(0).numpy(), roi)
        st["first_disc32"] += on_disc(b32[0], dx, dy, size) if b32 else 0
        st["first_disc64"] += on_disc(b64[0], dx, dy, gen) if b64 else 0
        with torch.no_grad():
            G.append(embed(vit, x32[None])[0])
            Y.append(int(drusen))
            H64.append(mean_crop_embedding(vit, x64, b64, roi, model.roi_size))
            for boxes, src, out, f in ((b32, x32, R32, 1), (b32, x64, R64, CACHE_TO_GEN)):
                out.append(mean_crop_embedding(vit, src, scaled(boxes, f), roi, model.roi_size))
            # where the drusen are (or would be: the same seed's drusen render), either class
            ob = mask_boxes(dm32, roi)
            ob = ob or [(size // 4, size // 4, 3 * size // 4, 3 * size // 4)]
            for src, out, f in ((x32, O32, 1), (x64, O64, CACHE_TO_GEN)):
                out.append(mean_crop_embedding(vit, src, scaled(ob, f), roi, model.roi_size))
        if drusen:
            add_hit_stats(st, dm64, b32, b64)

    nd = st["n_dr"]
    print(f"{N} images, {nd} with drusen; boxes found on the {size}-px image: drusen images with an ROI on a druse "
          f"{st['img_hit32']/nd:.2f}, drusen touched {st['druse_hit32']/st['druse']:.2f}, "
          f"first ROI on the disc {st['first_disc32']/N:.2f}")
    print(f"   boxes found on the {gen}-px image (same rule): drusen images with an ROI on a druse "
          f"{st['img_hit64']/nd:.2f}, drusen touched {st['druse_hit64']/st['druse']:.2f}, "
          f"first ROI on the disc {st['first_disc64']/N:.2f}")
    Y = np.array(Y)
    tr, te = np.arange(N) < N // 2, np.arange(N) >= N // 2
    probes = (("global 32", G), ("roi 32 (cache)", R32), ("roi 64 (full)", R64), ("roi 64, 64 boxes", H64),
              ("oracle 32", O32), ("oracle 64", O64))
    for name, features in probes:
        print(f"drusen probe {name:15s} test AUC {probe_auc(features, Y, tr, te):.3f}")


if __name__ == "__main__":
    main()
