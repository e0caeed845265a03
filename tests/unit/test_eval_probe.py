import numpy as np
import torch

from catlip.evaluate.classify.knn import knn_accuracy
from catlip.evaluate.classify.linear import (ProbeConfig, balanced_subset, ridge_fit, ridge_probe, score, split_train_val,
                                             train_probe)
from catlip.evaluate.common.features import Features


def clusters(n_per_class: int, num_classes: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0) -> Features:
    """Gaussian blobs around well separated centres: a linearly separable problem."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(num_classes, dim) * 3.0 + 1.0
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=gen)
    return Features(x, y)


def test_logistic_probe_separates_separable_features():
    train, test = clusters(50), clusters(30, seed=1)
    result = train_probe(train, 4, ProbeConfig(epochs=20, lrs=[1e-2, 1e-1], weight_decays=[0.0, 1e-2]))
    assert score(result.linear, test)["top1"] == 1.0
    assert len(result.grid) == 4 and result.lr in (1e-2, 1e-1)
    assert result.val_score == 1.0


def test_probe_grid_members_train_independently():
    """A pair with lr=0 must stay exactly at its initialisation while its neighbour in the grid learns."""
    from catlip.evaluate.classify.linear import _random_linear, fit_linear_grid

    train = clusters(20)
    init = _random_linear(16, 4, seed=3)
    frozen, learnt = fit_linear_grid(train, 4, ProbeConfig(epochs=5), init, [(0.0, 0.0), (1e-1, 0.0)])
    assert torch.equal(frozen.weight, init.weight) and torch.equal(frozen.bias, init.bias)
    assert score(learnt, train)["top1"] == 1.0


def test_probe_uses_the_given_initialisation():
    """With a negligible learning rate the result is the init: a perfect init scores 100 %, a random one not."""
    train = clusters(20)
    perfect = torch.nn.Linear(16, 4)
    with torch.no_grad():
        perfect.weight.copy_(torch.eye(4, 16))
        perfect.bias.zero_()
    cfg = ProbeConfig(epochs=1, min_steps=1, lrs=[1e-7], weight_decays=[0.0])
    assert score(train_probe(train, 4, cfg, init=perfect).linear, train)["top1"] == 1.0
    assert score(train_probe(train, 4, cfg).linear, train)["top1"] < 0.9


def test_multilabel_probe_reports_map():
    feats = clusters(30)
    multi = torch.nn.functional.one_hot(feats.y, 4).float()
    multi[:, 3] = (feats.y >= 2).float()  # class 3 also marks class-2 images
    result = train_probe(Features(feats.x, multi), 4, ProbeConfig(epochs=30, lrs=[1e-1], weight_decays=[0.0]))
    assert score(result.linear, Features(feats.x, multi))["mAP"] > 0.99


def test_ridge_matches_lstsq_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=gen)
    y = torch.randint(0, 3, (40,), generator=gen)
    lam = 0.7
    lin = ridge_fit(x, y, 3, lam)
    # reference: centre, then least squares on the system stacked with sqrt(lam) * I (penalised weights only)
    xn, yn = x.double().numpy(), np.eye(3)[y.numpy()]
    xc, yc = xn - xn.mean(0), yn - yn.mean(0)
    a = np.vstack([xc, np.sqrt(lam) * np.eye(8)])
    b = np.vstack([yc, np.zeros((8, 3))])
    w, *_ = np.linalg.lstsq(a, b, rcond=None)
    bias = yn.mean(0) - xn.mean(0) @ w
    np.testing.assert_allclose(lin.weight.detach().numpy(), w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.bias.detach().numpy(), bias, rtol=1e-5, atol=1e-6)


def test_ridge_probe_leave_one_out_is_exact():
    """The hat-matrix leave-one-out accuracy equals refitting without each sample."""
    train = clusters(4, spread=2.0, seed=5)
    lin, info = ridge_probe(train, 4, lambdas=[0.05])
    lam = info["chosen"]["lambda"]
    hits = 0
    for i in range(len(train)):
        keep = torch.tensor([j for j in range(len(train)) if j != i])
        refit = ridge_fit(train.x[keep], train.y[keep], 4, lam)
        hits += int(refit(train.x[i : i + 1]).argmax() == train.y[i])
    assert abs(info["chosen"]["loo_top1"] - hits / len(train)) < 1e-9


def test_ridge_probe_few_shot_on_separable_features():
    lin, info = ridge_probe(clusters(5), 4)
    assert score(lin, clusters(30, seed=9))["top1"] == 1.0
    assert len(info["grid"]) == 5 and info["chosen"]["loo_top1"] == 1.0


def test_knn_accuracy_on_separable_features():
    assert knn_accuracy(clusters(30), clusters(10, seed=2), 4, k=20)["top1"] == 1.0


def test_balanced_subsets_are_seeded_and_balanced():
    y = torch.arange(5).repeat_interleave(100)
    idx = balanced_subset(y, fraction=0.1, seed=1)
    assert torch.bincount(y[idx]).tolist() == [10] * 5
    assert torch.equal(idx, balanced_subset(y, fraction=0.1, seed=1))
    assert not torch.equal(idx, balanced_subset(y, fraction=0.1, seed=2))
    assert torch.bincount(y[balanced_subset(y, fraction=0.001)]).tolist() == [1] * 5  # at least one per class
    assert torch.bincount(y[balanced_subset(y, shots=3)]).tolist() == [3] * 5
    tr, val = split_train_val(y, 0.2)
    assert len(set(tr.tolist()) & set(val.tolist())) == 0 and torch.bincount(y[val]).tolist() == [20] * 5


def test_stacked_adamw_equals_torch_adamw():
    """The batched optimiser of the grid follows torch.optim.AdamW step for step, per member."""
    from catlip.evaluate.classify.linear import _StackedAdamW

    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 4, 5, generator=gen)
    grads = [torch.randn(3, 4, 5, generator=gen) for _ in range(5)]
    lrs, wds = torch.tensor([1e-3, 1e-2, 0.1]), torch.tensor([0.0, 0.1, 0.01])
    stacked = w0.clone()
    opt = _StackedAdamW([stacked], lrs, wds)
    refs = [torch.nn.Parameter(w0[k].clone()) for k in range(3)]
    torch_opt = torch.optim.AdamW([{"params": [r], "lr": float(lrs[k]), "weight_decay": float(wds[k])}
                                   for k, r in enumerate(refs)])
    for step, grad in enumerate(grads):
        factor = 1.0 - 0.1 * step
        stacked.grad = grad
        opt.step(factor)
        for k, r in enumerate(refs):
            r.grad = grad[k].clone()
            torch_opt.param_groups[k]["lr"] = float(lrs[k]) * factor
        torch_opt.step()
    for k, r in enumerate(refs):
        torch.testing.assert_close(stacked[k], r.detach(), rtol=1e-5, atol=1e-6)
