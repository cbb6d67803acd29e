"""The collapse lab (notebook 10): each variant trained by the one loop, its monitors read off the encoder that
defines the targets, after the steps asked for and after the last one."""

import pytest

from conftest import Blobs
from jepa_lite.core.config import load_config
from jepa_lite.lab.collapse_lab import LAB, monitors, run_lab

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_lab_is_the_course_model_small_and_fast():
    cfg = load_config(overrides=list(LAB))
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.optim.global_batch) == (64, 2, 64)
    assert cfg.optim.lr == 3e-3 and cfg.optim.warmup_epochs == 0 and tuple(cfg.optim.ema) == (0.98, 1.0)


def test_run_lab_records_the_target_defining_encoder_every_few_steps_and_at_the_end():
    data = Blobs(128)
    images = data.x[:32]
    small = ["data.image_size=16"]
    logs, methods = run_lab(
        {"EMA": [*small, "method.target_mode=ema"], "SIGReg": [*small, "method.name=ijepa_sigreg"]},
        steps=5,
        every=2,
        data=data,
        probe_images=images,
    )
    assert list(logs) == list(methods) == ["EMA", "SIGReg"]
    for name, log in logs.items():
        assert log["step"] == [0, 2, 4]
        assert all(len(log[key]) == 3 for key in ("loss", "rankme", "feature_std"))
        # the last record is the trained method's own encoder, the one the targets come from
        assert (log["rankme"][-1], log["feature_std"][-1]) == pytest.approx(
            monitors(methods[name].eval_encoder, images)
        )
        assert not methods[name].training
    assert methods["EMA"].eval_encoder is methods["EMA"].target_encoder
    assert methods["SIGReg"].eval_encoder is methods["SIGReg"].context_encoder
    assert methods["SIGReg"].sigreg_weight == 0.05 and methods["EMA"].sigreg_weight == 0
