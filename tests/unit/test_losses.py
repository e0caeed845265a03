"""Each loss against a hand-written reference, and its value at initialisation against theory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from catlip import losses


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g) * 3
    targets = torch.tensor(
        [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 1]], dtype=torch.float32
    )
    return logits, targets


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_bce_matches_elementwise_reference(batch):
    logits, targets = batch
    ref = 0.0
    for x_row, y_row in zip(logits.tolist(), targets.tolist()):
        for x, y in zip(x_row, y_row):
            ref -= y * math.log(_sig(x)) + (1 - y) * math.log(1 - _sig(x))
    assert losses.bce(logits, targets).item() == pytest.approx(ref / 4, rel=1e-5)


def test_bce_at_zero_logits_is_v_log2(batch):
    _, targets = batch
    value = losses.bce(torch.zeros(4, 6), targets)
    assert value.item() == pytest.approx(6 * math.log(2), rel=1e-6)


def test_bce_computes_in_float32_from_bf16(batch):
    logits, targets = batch
    value = losses.bce(logits.bfloat16(), targets.bfloat16())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(losses.bce(logits.bfloat16().float(), targets).item(), rel=1e-6)


def test_idf_softmax_matches_reference_and_skips_empty_rows(batch):
    logits, targets = batch
    weights = targets * torch.tensor([0.5, 1.0, 2.0, 1.5, 1.0, 3.0])
    ref = 0.0
    for x_row, w_row in zip(logits.tolist(), weights.tolist()):
        total = sum(w_row)
        if total == 0:
            continue  # the unlabelled third sample contributes nothing
        log_z = math.log(sum(math.exp(x) for x in x_row))
        ref -= sum(w / total * (x - log_z) for x, w in zip(x_row, w_row))
    assert losses.idf_softmax(logits, weights).item() == pytest.approx(ref / 4, rel=1e-5)


def test_idf_softmax_at_zero_logits_is_log_v():
    weights = torch.tensor([[0.0, 2.0, 5.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    assert losses.idf_softmax(torch.zeros(2, 5), weights).item() == pytest.approx(math.log(5), rel=1e-6)


def test_idf_softmax_gradient_of_empty_row_is_zero(batch):
    logits, targets = batch
    logits = logits.clone().requires_grad_(True)
    losses.idf_softmax(logits, targets).backward()
    assert torch.all(logits.grad[2] == 0)
    assert torch.all(logits.grad[0] != 0)


def test_asl_matches_reference(batch):
    logits, targets = batch
    ref = 0.0
    for x_row, y_row in zip(logits.tolist(), targets.tolist()):
        for x, y in zip(x_row, y_row):
            p = _sig(x)
            if y:
                ref -= math.log(max(p, 1e-8))  # gamma_pos = 0
            else:
                pm = max(p - 0.05, 0.0)
                ref -= pm**4 * math.log(max(1 - pm, 1e-8))
    assert losses.asl(logits, targets).item() == pytest.approx(ref / 4, rel=1e-5)


def test_asl_without_focusing_or_clip_is_bce(batch):
    logits, targets = batch
    value = losses.asl(logits, targets, gamma_neg=0, gamma_pos=0, clip=0)
    assert value.item() == pytest.approx(losses.bce(logits, targets).item(), rel=1e-5)


def test_soft_margin_is_bce_over_classes(batch):
    logits, targets = batch
    assert losses.soft_margin(logits, targets).item() == pytest.approx(losses.bce(logits, targets).item() / 6, rel=1e-5)


def _relative(xs, ys, t_pos=4.0, t_neg=1.0):
    pos = [x for x, y in zip(xs, ys) if y]
    neg = [x for x, y in zip(xs, ys) if not y]
    if not pos:
        return None
    hard_pos = t_pos * math.log(sum(math.exp(-x / t_pos) for x in pos))
    hard_neg = t_neg * math.log(sum(math.exp(x / t_neg) for x in neg)) if neg else -math.inf
    return math.log1p(math.exp(hard_pos + hard_neg))


def test_two_way_matches_reference(batch):
    logits, targets = batch
    rows = [r for r in (_relative(x, y) for x, y in zip(logits.tolist(), targets.tolist())) if r is not None]
    cols = [c for c in (_relative(x, y) for x, y in zip(logits.t().tolist(), targets.t().tolist())) if c is not None]
    ref = sum(rows) / len(rows) + sum(cols) / len(cols)
    assert len(rows) == 3 and len(cols) == 5
    assert losses.two_way(logits, targets).item() == pytest.approx(ref, rel=1e-5)


def test_two_way_gradient_is_finite_for_rows_without_negatives():
    logits = torch.randn(2, 3, requires_grad=True)
    targets = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    losses.two_way(logits, targets).backward()
    assert torch.isfinite(logits.grad).all()


def test_clip_loss_matches_reference():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    scale = 7.0
    i = [[v / math.sqrt(sum(a * a for a in r)) for v in r] for r in img.tolist()]
    t = [[v / math.sqrt(sum(a * a for a in r)) for v in r] for r in txt.tolist()]
    sims = [[scale * sum(a * b for a, b in zip(ri, tj)) for tj in t] for ri in i]

    def ce(rows):
        return sum(math.log(sum(math.exp(v) for v in r)) - r[k] for k, r in enumerate(rows)) / len(rows)

    ref = (ce(sims) + ce([list(c) for c in zip(*sims)])) / 2
    assert losses.clip_loss(img, txt, scale).item() == pytest.approx(ref, rel=1e-5)


def test_clip_loss_without_information_is_log_b():
    same = torch.ones(6, 4)
    assert losses.clip_loss(same, same * 3, torch.tensor(14.3)).item() == pytest.approx(math.log(6), rel=1e-6)


def test_siglip_loss_matches_reference():
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    scale, bias = 10.0, -2.0
    i, t = F.normalize(img, dim=1).tolist(), F.normalize(txt, dim=1).tolist()
    ref = 0.0
    for a, ri in enumerate(i):
        for b, tj in enumerate(t):
            z = scale * sum(x * y for x, y in zip(ri, tj)) + bias
            sign = 1 if a == b else -1
            ref -= math.log(_sig(sign * z))
    assert losses.siglip_loss(img, txt, scale, bias).item() == pytest.approx(ref / 3, rel=1e-5)


def test_siglip_loss_at_zero_scale_is_softplus_of_bias():
    # Scale 0: every logit is the bias b; B positives cost softplus(-b), B^2 - B negatives softplus(b).
    img, txt, b = torch.randn(4, 3), torch.randn(4, 3), -10.0
    expected = (4 * F.softplus(torch.tensor(-b)) + 12 * F.softplus(torch.tensor(b))) / 4
    assert losses.siglip_loss(img, txt, 0.0, b).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("loss", ["clip_loss", "siglip_loss"])
def test_contrastive_losses_ignore_autocast(loss):
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    args = (img, txt, torch.tensor(20.0)) + ((torch.tensor(-10.0),) if loss == "siglip_loss" else ())
    exact = getattr(losses, loss)(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = getattr(losses, loss)(*args)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(exact.item(), rel=1e-6)


def test_binary_losses_accept_bool_targets(batch):
    logits, targets = batch
    for fn in (losses.bce, losses.asl, losses.soft_margin, losses.two_way):
        assert fn(logits, targets.bool()).item() == pytest.approx(fn(logits, targets).item(), rel=1e-6)


def test_softmax_losses_are_registered_classification_losses():
    """One list says which heads are softmax heads (prior bias as log-share, tags as softmax probabilities); every
    name in it must be a real loss (a stray "softmax" once stood in the trainer's own copy of the list)."""
    from catlip import losses
    from catlip.evaluate.caption import head as tagging
    from catlip.methods.registry import METHODS

    assert set(losses.SOFTMAX_LOSSES) <= set(losses.CLASSIFICATION_LOSSES)
    assert tagging.SOFTMAX_LOSSES is losses.SOFTMAX_LOSSES
    assert {m.default_loss for m in METHODS.values() if m.uses_labels} & set(losses.SOFTMAX_LOSSES) == {"idf_softmax"}
