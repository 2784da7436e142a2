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
``cd experiments/hica3 && python ../../bench/hica_roi_premise.py``.
"""
import numpy as np, torch
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from medrepro.config import load_config
from medrepro.data import synth_mm as S
from medrepro.data.images import resize_square
from medrepro.hica.rois import RoiConfig, training_boxes, mask_boxes, crops
from medrepro.train.hica import hica_inputs
torch.set_num_threads(1)
cfg = load_config("params.yaml", "config/experiments/hica3.yaml")
d = cfg.data["synth_mm"]
data, names, desc, setup = hica_inputs(cfg, "synth_mm", "shot_5", 0)
model = setup.model(torch.zeros(len(names), setup.text_tower.dim)).eval(); vit = model.towers["fundus"]
roi = RoiConfig(**cfg.hica.rois); print(roi)
mean, std = data.images.mean, data.images.std
gen, size = d["gen_size"], d["image_size"]
contrast, noise = float(np.clip(1 - 0.6 * d["difficulty"], 0.2, 1)), 0.02 + 0.1 * d["difficulty"]
norm = lambda a: (torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1) - mean[0]) / std[0]
emb = lambda x: vit.forward_head(vit.forward_features(x), pre_logits=True)
rng0 = np.random.default_rng(123); N = 400
st = {k: 0 for k in ("n_dr", "img_hit32", "img_hit64", "druse", "druse_hit32", "druse_hit64", "first_disc32", "first_disc64")}
G, O32, O64, R32, R64, H64, Y = [], [], [], [], [], [], []
for i in range(N):
    drusen = i % 2 == 0; seed = int(rng0.integers(1 << 31))
    attrs = S.sample_attributes(np.random.default_rng(seed + 1))
    img = S.render_fundus(np.random.default_rng(seed), gen, drusen, False, attrs, contrast, noise, d["leak"])
    clean = dict(attrs, texture="smooth")
    a0 = S.render_fundus(np.random.default_rng(seed), gen, True, False, clean, contrast, 0.0, d["leak"])
    b0 = S.render_fundus(np.random.default_rng(seed), gen, False, False, clean, contrast, 0.0, d["leak"])
    dm64 = np.abs(a0.astype(int) - b0.astype(int)).max(-1) > 20
    dm32 = resize_square(dm64[..., None].astype(np.uint8) * 255, size)[..., 0] > 127
    r = np.random.default_rng(seed); r.uniform(0.92, 1.08); r.uniform(0.9, 1.1, size=3)
    dx, dy = 0.5 + r.uniform(-0.05, 0.05), r.uniform(-0.08, 0.08)
    disc = lambda b, s: b[0] <= int((dy + 1) / 2 * s) < b[2] and b[1] <= int((dx + 1) / 2 * s) < b[3]
    x32, x64 = norm(resize_square(img, size)), norm(img)
    b32 = training_boxes(x32.mean(0).numpy(), roi); b64 = training_boxes(x64.mean(0).numpy(), roi)
    st["first_disc32"] += disc(b32[0], size) if b32 else 0; st["first_disc64"] += disc(b64[0], gen) if b64 else 0
    with torch.no_grad():
        G.append(emb(x32[None])[0]); Y.append(int(drusen))
        c, v = crops(x64, b64, roi.k, model.roi_size); H64.append(emb(c[v]).mean(0))
        for boxes, src, out, f in ((b32, x32, R32, 1), (b32, x64, R64, 2)):
            c, v = crops(src, [tuple(f * t for t in b) for b in boxes], roi.k, model.roi_size); out.append(emb(c[v]).mean(0))
        ob = mask_boxes(dm32, roi)  # where the drusen are (or would be: the same seed's drusen render), either class
        ob = ob or [(size // 4, size // 4, 3 * size // 4, 3 * size // 4)]
        for src, out, f in ((x32, O32, 1), (x64, O64, 2)):
            c, v = crops(src, [tuple(f * t for t in b) for b in ob], roi.k, model.roi_size); out.append(emb(c[v]).mean(0))
    if not drusen:
        continue
    st["n_dr"] += 1
    lab, n = ndimage.label(dm64); st["druse"] += n
    inb = lambda ys, xs, b, f: ((ys >= b[0] * f) & (ys < b[2] * f) & (xs >= b[1] * f) & (xs < b[3] * f)).any()
    for j in range(1, n + 1):
        ys, xs = np.nonzero(lab == j)
        st["druse_hit32"] += any(inb(ys, xs, b, 2) for b in b32); st["druse_hit64"] += any(inb(ys, xs, b, 1) for b in b64)
    ys, xs = np.nonzero(dm64)
    st["img_hit32"] += any(inb(ys, xs, b, 2) for b in b32); st["img_hit64"] += any(inb(ys, xs, b, 1) for b in b64)
nd = st["n_dr"]
print(f"{N} images, {nd} with drusen; boxes found on the {size}-px image: drusen images with an ROI on a druse "
      f"{st['img_hit32']/nd:.2f}, drusen touched {st['druse_hit32']/st['druse']:.2f}, first ROI on the disc {st['first_disc32']/N:.2f}")
print(f"   boxes found on the {gen}-px image (same rule): drusen images with an ROI on a druse {st['img_hit64']/nd:.2f}, "
      f"drusen touched {st['druse_hit64']/st['druse']:.2f}, first ROI on the disc {st['first_disc64']/N:.2f}")
Y = np.array(Y); tr, te = np.arange(N) < N // 2, np.arange(N) >= N // 2
for name, Fe in (("global 32", G), ("roi 32 (cache)", R32), ("roi 64 (full)", R64), ("roi 64, 64 boxes", H64), ("oracle 32", O32), ("oracle 64", O64)):
    Fe = torch.stack(Fe).numpy(); clf = LogisticRegression(max_iter=3000).fit(Fe[tr], Y[tr])
    print(f"drusen probe {name:15s} test AUC {roc_auc_score(Y[te], clf.predict_proba(Fe[te])[:, 1]):.3f}")
