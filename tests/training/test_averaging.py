"""Weight averaging, batch-norm re-estimation and frozen stages on tiny real timm models."""

from __future__ import annotations

import pytest
import torch

from pneumo.models.registry import create_model
from pneumo.training.averaging import average_states, ema_model, greedy_soup, interpolate
from pneumo.training.batchnorm import freeze_early_stages, keep_frozen_eval, recompute_batchnorm


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("test_efficientnet", pretrained=False)


def test_wise_ft_interpolates_between_its_two_ends():
    a, b = _model(0).state_dict(), _model(1).state_dict()
    key = next(k for k, v in a.items() if v.is_floating_point() and v.numel() > 1)
    assert torch.equal(interpolate(a, b, 1.0)[key], b[key])
    assert torch.equal(interpolate(a, b, 0.0)[key], a[key])
    assert torch.allclose(interpolate(a, b, 0.5)[key], (a[key] + b[key]) / 2)
    assert torch.allclose(average_states([a, b])[key], (a[key] + b[key]) / 2)
    with pytest.raises(ValueError, match="alpha"):
        interpolate(a, b, 1.5)
    other = create_model("test_resnet", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="different keys"):
        interpolate(a, other, 0.5)


def test_greedy_soup_keeps_only_ingredients_that_do_not_hurt():
    target = torch.tensor([1.0, 1.0])
    states = [{"w": torch.tensor(v)} for v in ([1.0, 0.8], [1.0, 1.2], [-5.0, -5.0])]

    def score(s):
        return -float((s["w"] - target).abs().sum())

    soup, kept, scores = greedy_soup(states, score)
    assert sorted(kept) == [0, 1]  # the outlier would pull the soup away: left out
    assert torch.allclose(soup["w"], target)
    assert scores[2] < scores[0]


def test_ema_starts_from_the_weights_and_follows_them_slowly():
    model = _model()
    ema = ema_model(model, 0.99)
    param = next(model.parameters())
    start = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
    for _ in range(200):
        ema.update_parameters(model)
    averaged = next(ema.module.parameters())
    # The warm-up forgets the starting weights; after 200 updates the average is at the target.
    assert torch.allclose(averaged, start + 1.0, atol=1e-3)
    with pytest.raises(ValueError):
        ema_model(model, 1.0)


def test_batchnorm_statistics_are_re_estimated_on_the_given_images():
    model = _model()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    batches = [torch.rand(4, 3, 64, 64) * 3 + 2 for _ in range(3)]
    seen = recompute_batchnorm(model.eval(), iter(batches))
    assert seen == 12
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not model.training and bn.momentum == 0.1  # restored
    # The same images again give the same statistics (a cumulative average, not a drift).
    first = bn.running_mean.clone()
    recompute_batchnorm(model, iter(batches))
    assert torch.allclose(bn.running_mean, first, atol=1e-5)


def test_frozen_stages_keep_their_weights_through_training():
    model = _model()
    frozen = freeze_early_stages(model, 1)
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    assert any(p.requires_grad for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    keep_frozen_eval(model)
    loss = model(torch.rand(4, 3, 64, 64)).sum()
    loss.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in after if n not in frozen)
    with pytest.raises(ValueError, match="at most"):
        freeze_early_stages(_model(), 99)


def test_relative_batchnorm_shift_leaves_training_like_films_alone():
    from pneumo.training.batchnorm import batchnorm_statistics, shift_batchnorm

    model = _model().eval()
    torch.manual_seed(1)
    train_like = [torch.rand(4, 3, 64, 64) for _ in range(3)]
    reference = batchnorm_statistics(model, iter(train_like))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shift_batchnorm(model, reference, batchnorm_statistics(model, iter(train_like)))
    assert all(
        torch.allclose(before[k].float(), v.float(), atol=1e-5)
        for k, v in model.state_dict().items()
    )
    # A brighter site moves the first layer's statistics by the site's difference.
    brighter = [x * 0.5 + 0.5 for x in train_like]
    site = batchnorm_statistics(model, iter(brighter))
    shift_batchnorm(model, reference, site)
    name = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn = dict(model.named_modules())[name]
    expected = before[f"{name}.running_mean"] + site[f"{name}.mean"] - reference[f"{name}.mean"]
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert not torch.allclose(bn.running_mean, before[f"{name}.running_mean"])
