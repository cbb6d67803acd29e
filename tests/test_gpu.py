"""What only a CUDA device can check: flash attention in the I-JEPA step, bf16 against fp32, no cuDNN attention
under `attention_kernels`, torch.compile against eager, the MFU that training logs, the probes on the GPU, and
fixed-shape masks (padded attention on a fused kernel, one compile). Every test is skipped where there is no
CUDA device (CI); `scripts/gpu_check.sh` runs them with the GPU benchmarks."""

import csv
import math

import pytest
import torch

from jepa_lite.cluster.run_folder import RunFolder
from jepa_lite.core.build import build_collator, build_method
from jepa_lite.core.collate import Batch
from jepa_lite.core.config import load_config
from jepa_lite.core.models import attention_kernels
from jepa_lite.core.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tiny_ijepa(seed: int = 0):
    """The course's default method (fmnist_vit_tiny: encoder heads of 64, predictor heads of 24) on CUDA."""
    cfg = load_config("fmnist_vit_tiny")
    torch.manual_seed(seed)
    method = build_method(cfg, in_chans=1).cuda()
    return cfg, method, build_collator(cfg, method.eval_encoder.grid)


def batches(collator, n: int, size: int = 64):
    """`n` batches of random images with real multi-block masks (so the context length differs per batch)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ctx, tgt = collator.sample(size, gen)
        images = torch.randn(size, 1, 28, 28, generator=gen)
        out.append(Batch(images, ctx, tgt, torch.arange(size)).to("cuda"))
    return out


def test_the_ijepa_step_runs_on_flash_attention_in_bf16_and_matches_fp32():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _, method, collator = tiny_ijepa()
    (batch,) = batches(collator, 1)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        ref, _ = method(batch)
    # Flash only: raises if any attention of the three networks (a mask, an odd head size) needed another kernel.
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = method(batch)
    loss.backward()
    assert loss.dtype == torch.float32  # smooth-L1 is autocast to fp32
    assert abs(loss.item() - ref.item()) < 0.02 * ref.item()
    grads = [p.grad for p in method.context_encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_the_training_step_attention_never_runs_cudnn():
    """cuDNN plans anew for every new sequence length, and I-JEPA's lengths change every step."""
    from torch.profiler import ProfilerActivity, profile

    _, method, collator = tiny_ijepa()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for batch in batches(collator, 2):
            with torch.autocast("cuda", dtype=torch.bfloat16), attention_kernels("cuda"):
                loss, _ = method(batch)
            loss.backward()
    names = [e.key.lower() for e in prof.key_averages()]
    assert any("flash" in n or "efficient" in n for n in names)
    assert not [n for n in names if "cudnn" in n and "attention" in n]


def test_compiled_method_gives_the_eager_loss_across_context_lengths():
    _, method, collator = tiny_ijepa()
    data = batches(collator, 4)
    assert len({b.context_idx.shape[1] for b in data}) > 1  # the shapes torch.compile must handle change
    with torch.no_grad():
        eager = [method(b)[0].item() for b in data]
        method.compile(dynamic=True)  # as jepa_lite.core.train does
        compiled = [method(b)[0].item() for b in data]
    assert compiled == pytest.approx(eager, rel=1e-3)


@pytest.mark.slow
def test_training_on_cuda_logs_a_finite_mfu_and_learns(tmp_path):
    cfg = load_config("fmnist_vit_tiny", ["optim.max_steps=40", "data.limit=12800", "log_every=1"])
    assert cfg.mixed_precision == "auto"  # bf16 on a bf16 GPU
    result = train(cfg, hooks=RunFolder(tmp_path), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 40
    mfu = [float(r["mfu"]) for r in rows[5:]]
    assert all(math.isfinite(m) and 0 < m < 1 for m in mfu), mfu  # the GPU's peak is known (A100/H100/H200)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) < sum(losses[:5])


def test_probes_on_the_gpu_agree_with_the_cpu():
    """evaluate_features(device='cuda') runs the L-BFGS probes, k-NN and RankMe on the GPU, same answers."""
    from jepa_lite.core.evaluate import evaluate_features

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 32, generator=g)
    train_y, test_y = torch.arange(2000) % 10, torch.arange(500) % 10
    train_x = centres[train_y] + 1.5 * torch.randn(2000, 32, generator=g)
    test_x = centres[test_y] + 1.5 * torch.randn(500, 32, generator=g)
    cpu = evaluate_features(train_x, train_y, test_x, test_y, per_class=20)
    gpu = evaluate_features(train_x, train_y, test_x, test_y, per_class=20, device="cuda")
    assert 20 < cpu["linear_probe"] < 100  # a task neither trivial nor hopeless
    for key in ("linear_probe", "knn", "low_shot"):
        assert abs(gpu[key] - cpu[key]) <= 1.0, (key, gpu[key], cpu[key])
    assert gpu["rankme"] == pytest.approx(cpu["rankme"], rel=1e-6)


def fixed_shape_batches(n: int, size: int = 64):
    """`n` batches with `mask.context_fill=fixed` masks: the same shapes every time, padding marked."""
    cfg = load_config("fmnist_vit_tiny", ["mask.context_fill=fixed"])
    torch.manual_seed(0)
    method = build_method(cfg, in_chans=1).cuda()
    collator = build_collator(cfg, method.eval_encoder.grid)
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(size, 1, 28, 28, generator=gen) for _ in range(n)]
    return method, [collator([(x, 0) for x in batch]).to("cuda") for batch in images]


def test_padded_attention_of_fixed_shapes_runs_on_a_fused_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    method, (batch,) = fixed_shape_batches(1)
    assert not batch.context_valid.all()  # there is padding to mask
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        ref, _ = method(batch)
    # Memory-efficient attention only (flash takes no mask): raises if the key-padding mask needed the math path.
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = method(batch)
    loss.backward()
    assert abs(loss.item() - ref.item()) < 0.02 * ref.item()


def test_a_fixed_shape_step_compiles_once_on_cuda():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    method, data = fixed_shape_batches(10)
    counter = CompileCounterWithBackend("inductor")
    method.compile(backend=counter, dynamic=False)
    for batch in data:
        with torch.autocast("cuda", dtype=torch.bfloat16), attention_kernels("cuda"):
            loss, _ = method(batch)
        loss.backward()
    torch._dynamo.reset()
    assert counter.frame_count == 1
