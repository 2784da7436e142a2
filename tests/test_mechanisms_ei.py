"""Capability tests of the EI paper's mechanisms: each on a tiny task built so that the mechanism is necessary.

Each test asserts that the mechanism solves its task AND that its mutation (adapters zeroed, [INT] left out, λ = 0)
does not, so a broken mechanism fails here in seconds. AdamW and a sensible lr for speed: these test capability,
not the paper's protocol.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrepro.models.adapters import LoRAMixtureLinear, apply_adapters
from medrepro.models.backbones import build_vit
from medrepro.models.ei import EINetwork, build_ei
from medrepro.train.diagnostics import grad_norms_per_term, relative_change, snapshot

#: a tiny random ViT: 16 px, 8-px patches (4 patch tokens + [CLS]), one block
TOWER = {"arch": "vit_tiny_patch16_224", "img_size": 16,
         "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}}
ADAPTERS = ("lora", "loramoe", "mor")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def quadrant_xor(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Images whose top-left and bottom-right quadrants are bright or dark; label = XOR of the two.

    Every linear function of the pixels (and a frozen near-linear random ViT's features) sees a + b only, which
    does not separate XOR: only a nonlinearity that adapts to the task (the adapters) can.
    """
    a, b = torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
    x = 0.3 * torch.randn(n, 3, 16, 16, generator=gen)
    x[:, :, :8, :8] += (2 * a - 1).float().view(-1, 1, 1, 1)
    x[:, :, 8:, 8:] += (2 * b - 1).float().view(-1, 1, 1, 1)
    return x, a ^ b


def grad_norm(p: Tensor) -> float:
    """Norm of ``p.grad`` (None: 0)."""
    return 0.0 if p.grad is None else float(p.grad.norm())


def accuracy(model: nn.Module, x: Tensor | dict[str, Tensor], y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def fit_vit(method: str, steps: int = 200, lr: float = 1e-2) -> tuple[nn.Module, float, float]:
    """A frozen tiny ViT with ``method`` trained on ``quadrant_xor``: the model, train and held-out accuracy."""
    torch.manual_seed(0)
    vit = apply_adapters(build_vit({**TOWER, "num_classes": 2}), method)
    gen = torch.Generator().manual_seed(1)
    (x, y), (x_test, y_test) = quadrant_xor(256, gen), quadrant_xor(256, gen)  # train, held out
    opt = torch.optim.AdamW([p for p in vit.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    vit.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        loss = F.cross_entropy(vit(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vit, accuracy(vit, x, y), accuracy(vit, x_test, y_test)


@pytest.fixture(scope="module")
def probe_accuracy() -> float:
    _, train, test = fit_vit("linear_probe")
    assert max(train, test) < 0.7, "the frozen features separate the task linearly: it no longer needs adapters"
    return test


# --- PEFT adapters (Sec. 3.4, Eq. 4; Table 7) --------------------------------------------------------------------


@pytest.mark.parametrize("method", ADAPTERS)
def test_adapters_solve_what_a_linear_probe_on_frozen_features_cannot(method: str, probe_accuracy: float) -> None:
    vit, train, test = fit_vit(method)
    assert train > 0.9 and test > 0.9, (method, train, test)
    with torch.no_grad():  # mutation: every B = 0, the update B A x vanishes → the frozen features + head
        for name, p in vit.named_parameters():
            if "lora_B" in name:
                p.zero_()
    gen = torch.Generator().manual_seed(1)
    _, held_out = quadrant_xor(256, gen), quadrant_xor(256, gen)  # fit_vit's held-out set
    zeroed = accuracy(vit, *held_out)
    assert zeroed < 0.7 and test - zeroed > 0.25, (method, zeroed, probe_accuracy)


def test_mor_router_bypass_and_every_rank_train() -> None:
    torch.manual_seed(0)
    vit = apply_adapters(build_vit({**TOWER, "num_classes": 2}), "mor")
    layers = [m for m in vit.modules() if isinstance(m, LoRAMixtureLinear)]
    x, y = quadrant_xor(64, torch.Generator().manual_seed(1))
    F.cross_entropy(vit(x), y).backward()
    # zero-init B (Eq. 4): at the start B A x = 0, so the router gets exactly no gradient yet (A neither)
    assert all(grad_norm(m.router.weight) == 0.0 for m in layers)
    assert all(grad_norm(e.lora_B) > 0 for m in layers for e in m.experts)
    vit.zero_grad()

    snap = snapshot(vit)
    opt = torch.optim.AdamW([p for p in vit.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(vit(x), y).backward()
        opt.step()
    for m in layers:
        grad = m.router.weight.grad
        assert grad is not None and float(grad[0].norm()) > 0, "the bypass column (w0) gets no gradient"
        assert all(float(grad[k].norm()) > 0 for k in range(1, len(m.experts) + 1))
        assert all(float(e.lora_B.detach().norm()) > 0 for e in m.experts), "a rank's B never left zero"
    change = relative_change(vit, snap)
    assert change["lora_B"].absolute and change["lora_B"].change > 0  # zero init: absolute norm, not a ratio
    assert not change["router"].absolute and change["router"].change > 0
    assert not change["lora_A"].absolute and change["lora_A"].change > 0


# --- [INT] tokens (Sec. 3.1–3.2, Eq. 1–2) -------------------------------------------------------------------------


def modality_xor(n: int, gen: torch.Generator) -> tuple[dict[str, Tensor], Tensor]:
    """Modality ``a`` shows one attribute (its brightness), ``b`` another; the label is their XOR.

    EI without [INT] fuses per-modality logits with a gate that is linear in per-modality features (Eq. 3), an
    additive model of a and b, which gets at most 3 of the 4 (a, b) cells right (~75 %); with [INT] the primary
    tower of one modality sees the other's [CLS] and can compute the interaction.
    """
    a, b = torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
    x = {m: 0.5 * torch.randn(n, 3, 16, 16, generator=gen) + (2 * v - 1).float().view(-1, 1, 1, 1)
         for m, v in (("a", a), ("b", b))}
    return x, a ^ b


def fit_ei(use_int: bool, steps: int = 100) -> tuple[float, float]:
    torch.manual_seed(0)
    net = build_ei(TOWER, ["a", "b"], 2, "full", lambda_ag=0.0, use_int=use_int)
    gen = torch.Generator().manual_seed(1)
    (x, y), (x_test, y_test) = modality_xor(256, gen), modality_xor(256, gen)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        loss = net.training_loss({m: v[idx] for m, v in x.items()}, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return accuracy(net, x, y), accuracy(net, x_test, y_test)


def test_int_tokens_learn_a_cross_modal_interaction_late_fusion_cannot() -> None:
    train, test = fit_ei(use_int=True)
    assert train > 0.9 and test > 0.9, (train, test)
    train_no, test_no = fit_ei(use_int=False)  # mutation: ei.intervention false
    assert train_no < 0.8 and test_no < 0.8, (train_no, test_no)  # the additive ceiling (~0.75)


# --- L_aa (λ1, Eq. 6) and L_ag (λ2, Eq. 7) ------------------------------------------------------------------------

EI_GROUPS = {
    "aux_adapters": lambda n: n.startswith("auxiliary.") and "lora_B" in n,
    "aux_heads": lambda n: n.startswith("auxiliary.") and ".vit.head." in n,
    "primary": lambda n: n.startswith("primary."),
    "gate": lambda n: n.startswith("gate."),
}


def tiny_ei(**options: object) -> tuple[EINetwork, dict[str, Tensor]]:
    """A MoR EI (the paper's adapter), one batch of its loss terms (graphs attached), λ-weighted as in Eq. 8."""
    torch.manual_seed(0)
    net = build_ei(TOWER, ["a", "b"], 2, "mor", modality_prior=[1.0, 0.5], **options)
    x, y = modality_xor(16, torch.Generator().manual_seed(1))
    parts = net.loss_terms(x, y)
    terms = {"L_p": parts["fused"] + parts["primary"], "L_aa": net.lambda_aa * parts["aux"],
             "L_ag": net.lambda_ag * parts["gate"], "total": parts["total"]}
    net.training_loss(x, y)
    return net, terms


def test_l_aa_trains_the_auxiliary_towers_and_l_ag_the_gate() -> None:
    net, terms = tiny_ei(lambda_aa=0.3, lambda_ag=0.1)
    g = grad_norms_per_term(net, terms, EI_GROUPS)
    assert g["L_aa"]["aux_adapters"] > 0 and g["L_aa"]["aux_heads"] > 0  # Eq. 6 reaches φ_a and its head
    assert g["L_aa"]["gate"] == 0 and g["L_aa"]["primary"] == 0
    assert g["L_ag"]["gate"] > 0 and g["L_ag"]["aux_heads"] == 0  # Eq. 7 reaches the gate
    assert g["L_p"]["aux_heads"] == 0 and g["total"]["aux_heads"] > 0  # the aux heads learn from L_aa alone


@pytest.mark.parametrize(("knob", "term", "group"), [("lambda_aa", "aux", "aux_heads"), ("lambda_ag", "gate", "gate")])
def test_lambda_zero_sends_nothing_from_its_term(knob: str, term: str, group: str) -> None:
    net, terms = tiny_ei(**{knob: 0.0})
    g = grad_norms_per_term(net, terms, EI_GROUPS)
    weighted = "L_aa" if term == "aux" else "L_ag"
    assert all(v == 0.0 for v in g[weighted].values()), g[weighted]
    assert float(net.last_loss_parts[term]) > 0  # the part is still reported
    parts = net.last_loss_parts
    rest = parts["fused"] + parts["primary"] + (net.lambda_aa * parts["aux"] if term == "gate" else 0) \
        + (net.lambda_ag * parts["gate"] if term == "aux" else 0)
    assert torch.allclose(parts["total"], rest)  # Eq. 8 without the term
    if term == "aux":  # nothing else trains the auxiliary heads: with λ1 = 0 the total sends them exactly 0
        assert g["total"]["aux_heads"] == 0.0
    else:  # the gate still learns from the fused CE, and only from it
        assert g["total"]["gate"] == pytest.approx(g["L_p"]["gate"], rel=1e-6) and g["total"][group] > 0


# --- the ei.intervention knob (EI without [INT]) ------------------------------------------------------------------


def test_intervention_knob_reaches_the_network_and_its_probe() -> None:
    from helpers import config

    from medrepro.config import EIConfig, parse_ablation
    from medrepro.ei.multimodal import build_model
    from medrepro.ei.probe import intervention_probe
    from medrepro.metrics.classification import classification_metrics

    assert parse_ablation("intervention-false") == ("intervention", False)
    cfg = config()
    assert cfg.ei.intervention is True and "intervention" in EIConfig.KNOBS
    knobs = cfg.with_ablation("intervention-false").ei.knobs()
    assert knobs["intervention"] is False
    net = build_model({"fusion": "ei", "adapter": "mor"}, TOWER, ["a", "b"], 2, False, knobs, None, [1.0, 0.5])
    assert isinstance(net, EINetwork) and not net.use_int
    x, y = modality_xor(8, torch.Generator().manual_seed(1))
    net.training_loss(x, y).backward()
    assert all(p.grad is None for p in net.int_adapters.parameters())  # no [INT] built
    assert any(p.grad is not None for p in net.auxiliary.parameters())  # L_aa still trains the auxiliary towers

    x, y = modality_xor(64, torch.Generator().manual_seed(2))
    with torch.no_grad():  # untrained [INT] adapters that would change every prediction, were they used
        for pairs in net.int_adapters.values():
            for adapter in pairs.values():
                adapter[-1].weight.mul_(100.0)
        own = classification_metrics(y.numpy(), net.eval()(x).softmax(-1).numpy())["mAP"]

    class Data:  # the TaskData surface intervention_probe reads
        multilabel, labels = False, y.numpy()

        def inputs(self, idx, device, train, gen, aug):  # noqa: ANN001, ANN202 - TaskData.inputs
            return {m: v[torch.as_tensor(idx)] for m, v in x.items()}

    probe = intervention_probe(net, Data(), torch.arange(64).numpy(), torch.device("cpu"))
    assert probe["with_int"]["fused"] == pytest.approx(own, abs=1e-9)  # the network as trained, no [INT]
    assert probe["int_gain"] == 0.0 and not net.use_int  # nothing to add: trained without [INT]
    assert "auxiliary/a" in probe["with_int"] and "auxiliary/a" not in probe["without_int"]
