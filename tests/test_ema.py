import pytest
import torch
from torch import nn

from jepa_lite.core.ema import ema_update, init_share, momentum_at


def pair():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    target.register_buffer("fixed", torch.ones(2))
    online.register_buffer("fixed", torch.zeros(2))
    return online, target


@pytest.mark.parametrize("m", [0.0, 0.5, 0.996])
def test_ema_is_the_convex_combination(m):
    online, target = pair()
    expected = [m * t + (1 - m) * o for t, o in zip(target.parameters(), online.parameters())]
    ema_update(target, online, m)
    for got, want in zip(target.parameters(), expected):
        torch.testing.assert_close(got, want)
    assert torch.equal(target.fixed, torch.ones(2))  # buffers are not averaged


def test_momentum_one_freezes_and_zero_copies():
    online, target = pair()
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))
    ema_update(target, online, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))


def test_repeated_updates_converge_to_the_online_weights():
    online, target = pair()
    for _ in range(2000):
        ema_update(target, online, 0.99)
    for a, b in zip(online.parameters(), target.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # lerp stalls within a few ulps


def test_bad_momentum_and_mismatched_modules_raise():
    online, target = pair()
    with pytest.raises(ValueError, match="momentum 1.5"):
        ema_update(target, online, 1.5)
    with pytest.raises(ValueError, match="parameter tensors"):
        ema_update(nn.Linear(4, 3, bias=False), online, 0.9)


def test_momentum_schedule_is_linear_from_start_to_end():
    assert momentum_at(0, 100) == 0.996
    assert momentum_at(100, 100) == 1.0
    assert momentum_at(50, 100) == pytest.approx(0.998)
    assert momentum_at(500, 100) == 1.0


def test_init_share_is_what_repeated_updates_leave_of_the_initial_target():
    online, target = pair()
    with torch.no_grad():
        for p in online.parameters():
            p.zero_()  # the online encoder is all zeros: what is left in the target is its initialisation
    w0 = target.weight.clone()
    momenta = [momentum_at(t, 187) for t in range(187)]
    for m in momenta:
        ema_update(target, online, m)
    assert torch.allclose(target.weight, init_share(momenta) * w0, atol=1e-6)
    assert 0.68 < init_share(momenta) < 0.70  # 187 steps from 0.996: about exp(-187 * 0.002)
    with pytest.raises(ValueError, match="1.5"):
        init_share([0.9, 1.5])
