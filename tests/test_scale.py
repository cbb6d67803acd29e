"""Cluster-scale arithmetic without a cluster: the global-batch contract of `pretrain.py --dry-run` for the
paper's ViT-H/14 run, and the analytic FLOPs / MFU of jepa_lite.core.flops."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from jepa_lite.core.build import build_method
from jepa_lite.core.collate import Batch
from jepa_lite.core.config import load_config
from jepa_lite.core.flops import (
    block_flops,
    encoder_dims,
    ijepa_step_flops,
    mfu,
    peak_flops,
    plain_vit_step_flops,
)

ROOT = Path(__file__).resolve().parents[1]


def _pretrain():
    spec = importlib.util.spec_from_file_location("pretrain_script", ROOT / "scripts" / "pretrain.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("world, accum", [(1, 16), (8, 2), (16, 1)])
def test_dry_run_vith14_global_batch_contract(world: int, accum: int, capsys) -> None:
    info = _pretrain().main(["--config", "in1k_vith14_ep300", "--dry-run", "--world-size", str(world)])
    assert info["global_batch"] == 2048
    assert info["per_device_batch"] == 128
    assert info["grad_accumulation"] == accum
    assert info["per_device_batch"] * info["grad_accumulation"] * world == 2048
    assert info["train_images"] == 1_281_167
    assert info["steps_per_epoch"] == 625
    assert info["total_steps"] == 187_500
    assert info["warmup_steps"] == 25_000  # 40 epochs
    out = capsys.readouterr().out
    assert "187500" in out and f"grad_accumulation: {accum}" in out


def test_dry_run_command_line() -> None:
    cmd = [
        sys.executable,
        "scripts/pretrain.py",
        "--config",
        "in1k_vith14_ep300",
        "--dry-run",
        "--world-size",
        "16",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120).stdout
    assert "per_device_batch: 128" in out and "total_steps: 187500" in out


def test_dry_run_uses_dataset_size_and_limit() -> None:
    pre = _pretrain()
    info = pre.main(
        ["--dry-run", "--world-size", "2", "data.limit=null", "optim.global_batch=256", "optim.epochs=1"]
    )
    assert info["train_images"] == 60_000 and info["steps_per_epoch"] == 234
    info = pre.main(["--dry-run", "data.limit=1000", "optim.global_batch=100", "optim.epochs=2"])
    assert info["train_images"] == 1000 and info["total_steps"] == 20
    with pytest.raises(SystemExit) as exit_info:  # one argparse error line naming the problem, exit status 2
        pre.main(["--config", "in1k_vith14_ep300", "--dry-run", "--world-size", "3"])
    assert exit_info.value.code == 2


def test_block_flops_by_hand() -> None:
    # T=10, D=8, r=4: linear 10*64*12 = 7680 MACs, attention 2*100*8 = 1600 MACs -> 2x
    assert block_flops(10, 8, 4.0) == 2 * (7680 + 1600)
    # the attention term is quadratic in tokens, the rest linear
    lin = block_flops(20, 8) - 2 * 2 * 400 * 8
    assert lin == pytest.approx(2 * (10 * 64 * 12) * 2)


def test_vit_forward_matches_known_counts() -> None:
    # ViT-B/16 at 224 is ~17.6 GMACs and ViT-H/14 ~167 GMACs per image forward (196 / 256 tokens).
    b = ijepa_step_flops(load_config("in1k_vitb16_ep600"), kc=100, kt=30, n_targets=4)
    assert b.target_encoder == pytest.approx(2 * 17.6e9, rel=0.02)
    h = ijepa_step_flops(load_config("in1k_vith14_ep300"), kc=100, kt=40, n_targets=4)
    assert h.target_encoder == pytest.approx(2 * 167e9, rel=0.02)
    assert encoder_dims(load_config("in1k_vith14_ep300"))["tokens"] == 256


def test_step_flops_structure() -> None:
    cfg = load_config("in1k_vith14_ep300")
    e = encoder_dims(cfg)
    f = ijepa_step_flops(cfg, kc=e["tokens"], kt=40, n_targets=4)
    # with the context on all tokens, context fwd+bwd is exactly 3x the target encoder's forward
    assert f.context_encoder == pytest.approx(3 * f.target_encoder)
    g = ijepa_step_flops(cfg, kc=100, kt=40, n_targets=4)
    assert g.context_encoder < f.context_encoder and g.target_encoder == f.target_encoder
    assert ijepa_step_flops(cfg, kc=100, kt=40, n_targets=2).predictor < g.predictor
    assert g.total == g.context_encoder + g.predictor + g.target_encoder


def test_expected_tokens_from_the_collator() -> None:
    cfg = load_config("in1k_vith14_ep300")
    f = ijepa_step_flops(cfg)
    n = encoder_dims(cfg)["tokens"]
    assert f.n_targets == 4
    assert 0.1 * n < f.target_tokens < 0.25 * n  # target blocks of 15-20% of the image
    assert 10 <= f.context_tokens < n
    assert 4e11 < f.total < 9e11  # ViT-H/14 step: ~0.64 TFLOPs per image


def test_mfu_and_peaks() -> None:
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("cpu") is None and peak_flops(None) is None and peak_flops("Tesla T4") is None
    assert mfu(494.5e12, "NVIDIA H100 80GB HBM3") == pytest.approx(0.5)
    assert mfu(1e12, "cpu") is None


def test_unknown_model_name_is_rejected() -> None:
    cfg = load_config("in1k_vith14_ep300", ["model.name=resnet50"])
    with pytest.raises(ValueError, match="model.name"):
        encoder_dims(cfg)


def load_benchmark_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_step_runs_on_cpu_and_writes_json(tmp_path: Path, capsys) -> None:
    bench = load_benchmark_script()
    out = tmp_path / "step.json"
    argv = ["step", "--model", "tiny", "--batch", "4", "--steps", "2", "--warmup", "0", "--device", "cpu",
            "--precision", "no", "--json", str(out)]  # fmt: skip
    (res,) = bench.main(argv)
    assert res["steps"] == 2 and res["images_per_s"] > 0 and res["median_step_s"] > 0
    assert res["mfu"] is None and res["peak_memory_bytes"] is None and res["flops_per_step"] > 0
    payload = json.loads(out.read_text())
    assert payload["command"] == "step" and payload["results"][0]["batch"] == 4
    assert res["cudnn_attention"] is False  # jepa_lite's attention choice, not PyTorch's default
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step tiny")]
    assert len(lines) == 4 and "images/s" in lines[0] and "MFU" in lines[3]


def test_benchmark_reference_reports_the_ratio_of_model_flop_rates(capsys) -> None:
    bench = load_benchmark_script()
    argv = ["step", "--model", "course", "--batch", "4", "--steps", "2", "--warmup", "1", "--device", "cpu",
            "--precision", "no", "--fill", "fixed", "--reference"]  # fmt: skip
    (res,) = bench.main(argv)
    ref = res["reference"]
    assert res["fill"] == "fixed" and res["context_slots"] >= res["context_tokens"] > 0
    assert ref["flops_per_step"] == pytest.approx(
        plain_vit_step_flops(load_config("fmnist_vit_tiny"), classes=1000) * 4
    )
    assert ref["model_flops_per_s"] == pytest.approx(ref["flops_per_step"] / ref["median_step_s"])
    expected = (res["flops_per_step"] / res["median_step_s"]) / ref["model_flops_per_s"]
    assert res["mfu_ratio_to_reference"] == pytest.approx(expected)
    assert "I-JEPA step at" in capsys.readouterr().out


def test_benchmark_profile_prints_the_top_ops(capsys) -> None:
    bench = load_benchmark_script()
    argv = ["step", "--model", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
            "--precision", "no", "--profile", "1"]  # fmt: skip
    bench.main(argv)
    out = capsys.readouterr().out
    assert "profile of 1 steps, top 25 ops by self_cpu_time_total" in out
    assert "aten::addmm" in out or "aten::mm" in out  # the ViT's matrix products are among the top ops


def test_slurm_script_parses_and_requeues() -> None:
    script = ROOT / "scripts" / "slurm" / "pretrain.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    for needle in ("#SBATCH --nodes=2", "#SBATCH --signal=B:USR1@300", "trap ask_for_checkpoint USR1",
                   "scontrol requeue", "--machine_rank \"$SLURM_NODEID\"", "--resume auto"):  # fmt: skip
        assert needle in text, needle


def test_slurm_script_asks_for_a_checkpoint_on_usr1_then_requeues(tmp_path: Path) -> None:
    """The batch shell under fake srun/scontrol: USR1 (the time limit near) writes the run's PREEMPT file, the
    'trainers' stop with status 75 as jepa_lite's do, and the job is requeued."""
    import os
    import signal
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    fakes = {
        "scontrol": f'#!/bin/bash\nif [ "$1" = show ]; then echo node1; else echo "$@" >> {log}; fi\n',
        # a trainer: run until the PREEMPT file appears, then stop with the requeue status
        "srun": '#!/bin/bash\nwhile [ ! -e "$OUT/$RUN_NAME/PREEMPT" ]; do sleep 0.05; done\nexit 75\n',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DATA": "/data", "OUT": str(tmp_path / "runs"),
           "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "8"}  # fmt: skip
    job = subprocess.Popen(["bash", str(ROOT / "scripts" / "slurm" / "pretrain.sbatch")], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    time.sleep(1.0)
    assert job.poll() is None  # training
    job.send_signal(signal.SIGUSR1)
    out, _ = job.communicate(timeout=30)
    assert job.returncode == 0, out
    assert (tmp_path / "runs" / "in1k_vith14_ep300" / "PREEMPT").exists()  # jepa_lite's trainer removes it
    assert log.read_text().split() == ["requeue", "42"]
    assert "asking the trainers for a checkpoint" in out and "requeueing job 42" in out


def test_step_flops_match_torch_flop_counter_on_a_real_ijepa_forward() -> None:
    """flops.py's arithmetic against torch's own count of every matrix product of one I-JEPA forward (context
    encoder, predictor over M blocks, target encoder), with attention as explicit matmuls so it is counted."""

    cfg = load_config(
        "fmnist_vit_tiny", ["model.embed_dim=64", "model.num_heads=2", "model.predictor_dim=32"]
    )
    torch.manual_seed(0)
    method = build_method(cfg, in_chans=1).eval()
    for module in method.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    b, kc, kt, m = 3, 20, 6, 4
    context = torch.arange(kc).expand(b, -1)
    targets = (kc + torch.arange(m * kt)).view(1, m, kt).expand(b, -1, -1)
    batch = Batch(torch.randn(b, 1, 28, 28), context, targets)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        method(batch)
    f = ijepa_step_flops(cfg, kc=kc, kt=kt, n_targets=m)
    forward = f.context_encoder / 3 + f.predictor / 3 + f.target_encoder  # the parts' forwards, per image
    assert counter.get_total_flops() == pytest.approx(b * forward, rel=1e-9)
