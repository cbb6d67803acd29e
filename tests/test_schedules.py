import pytest
import torch
from torch import nn

from jepa_lite.core.schedules import Schedules, cosine, param_groups, set_optimizer_values, warmup_cosine


def test_warmup_cosine_endpoints_and_shape():
    kw = dict(warmup=10, start=2e-4, peak=1e-3, final=1e-6)
    assert warmup_cosine(0, 100, **kw) == pytest.approx(2e-4)
    assert warmup_cosine(5, 100, **kw) == pytest.approx(6e-4)
    assert warmup_cosine(10, 100, **kw) == pytest.approx(1e-3)
    assert warmup_cosine(55, 100, **kw) == pytest.approx((1e-3 + 1e-6) / 2)
    assert warmup_cosine(100, 100, **kw) == pytest.approx(1e-6)
    after = [warmup_cosine(s, 100, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_weight_decay_rises_cosine_from_004_to_04():
    assert cosine(0, 50, start=0.04, end=0.4) == pytest.approx(0.04)
    assert cosine(50, 50, start=0.04, end=0.4) == pytest.approx(0.4)
    assert cosine(25, 50, start=0.04, end=0.4) == pytest.approx(0.22)


def test_schedules_at_gives_the_papers_endpoints():
    s = Schedules(total_steps=300, warmup_steps=40)
    first, last = s.at(0), s.at(300)
    assert first == pytest.approx({"lr": 2e-4, "wd": 0.04, "momentum": 0.996})
    assert last == pytest.approx({"lr": 1e-6, "wd": 0.4, "momentum": 1.0})
    assert s.at(40)["lr"] == pytest.approx(1e-3)


def test_no_weight_decay_on_biases_norms_and_mask_tokens():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model.mask_token = nn.Parameter(torch.zeros(1, 1, 4))
    model.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)
    decay, no_decay = param_groups(model)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 4  # linear bias, norm weight and bias, mask token; frozen excluded
    opt = torch.optim.AdamW([decay, no_decay])
    set_optimizer_values(opt, 1e-3, 0.3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
