"""The experiment grid: run identity, planning, summaries and the quick grid end to end (scripts/reproduce.py)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jepa_lite.core.build import total_steps_of
from jepa_lite.lab.experiments import (
    DEFAULT_GROUPS,
    GROUPS,
    METRICS,
    NUISANCE_METHODS,
    PROBE_VERSION,
    QUICK_SEEDS,
    STALE_MARK,
    make_config,
    planned_runs,
    run_key,
)
from jepa_lite.lab.tables import cost_table, grid_cost, summarize, summary_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_run_key_ignores_override_order_but_not_values_or_seed():
    a = run_key(("mask.n_targets=2", "model.predictor_depth=1"), 0)
    assert a == run_key(("model.predictor_depth=1", "mask.n_targets=2"), 0)
    assert a != run_key(("model.predictor_depth=1", "mask.n_targets=2"), 1)
    assert a != run_key(("model.predictor_depth=1", "mask.n_targets=1"), 0)


def test_the_default_run_is_shared_by_every_group_that_has_it():
    plan = planned_runs(GROUPS)
    keys = [run_key(o, s) for o, s in plan]
    assert len(keys) == len(set(keys))
    defaults = [(o, s) for o, s in plan if not o]
    assert defaults == [((), 0), ((), 1), ((), 2)]  # three seeds from the architectures group, once each
    # every non-default row of every group is planned, with its seeds
    for rows in GROUPS.values():
        for row in rows:
            assert all((row.overrides, s) in plan for s in range(row.seeds))
    # a run shared by rows of different groups is planned once, with the most seeds any of its rows asks for
    most = {}
    for row in (r for rows in GROUPS.values() for r in rows):
        most[row.overrides] = max(most.get(row.overrides, 0), row.seeds)
    # the small-batch run: 1 seed in training_budget, 3 in masking_batch32
    assert most[GROUPS["masking_batch32"][0].overrides] == 3
    assert len(plan) == sum(most.values()) and len(planned_runs(GROUPS, seeds=1)) == len(most)


def test_unknown_group_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="unknown experiment group 'maskin'.*masking"):
        planned_runs(["maskin"])


def test_rows_change_exactly_what_they_say():
    base = make_config((), 0)
    raster = make_config(("mask.strategy=rasterized",), 3)
    assert raster.mask.strategy == "rasterized" and raster.seed == 3 and base.mask.strategy == "multiblock"
    assert make_config(("mask.target_scale=[0.075,0.1]",), 0).mask.target_scale == (0.075, 0.1)
    quick = make_config((), 0, quick=True)
    assert quick.optim.max_steps == 3 and quick.data.limit == 512
    assert (quick.model, quick.mask, quick.method) == (
        base.model,
        base.mask,
        base.method,
    )  # same learning content
    mae = make_config(GROUPS["architectures"][1].overrides, 0)
    assert (mae.method.name, mae.mask.strategy, mae.mask.target_ratio) == ("mae", "random", 0.75)
    # the small-batch budget row sees the same images as the default in 8x more steps, lr scaled by sqrt(batch)
    rows = {r.name: r for r in GROUPS["training_budget"]}
    small = make_config(rows["batch 32, 0.8 epochs (1500 steps)"].overrides, 0)
    (_, steps, _), (_, base_steps, _) = total_steps_of(small, 60_000), total_steps_of(base, 60_000)
    assert steps == 1500 and abs(steps * 32 - base_steps * 256) / (base_steps * 256) < 0.01
    assert small.optim.lr == pytest.approx(base.optim.lr * (32 / 256) ** 0.5, rel=0.02)  # rounded to 3.5e-4
    assert (small.model, small.mask, small.optim.ema) == (base.model, base.mask, base.optim.ema)
    long = make_config(rows["batch 32, 6 epochs (11250 steps)"].overrides, 0)
    assert total_steps_of(long, 60_000)[1] == 11250 and long.optim.lr == small.optim.lr
    # the 384-wide row: twice the width at the same 64-dim heads, half the lr, else the small-batch recipe
    wide = make_config(rows["384 wide, batch 32, 2.3 epochs (4312 steps)"].overrides, 0)
    assert (wide.model.embed_dim, wide.model.embed_dim // wide.model.num_heads) == (384, 64)
    assert wide.model == dataclasses.replace(small.model, embed_dim=384, num_heads=6)
    assert (wide.optim.lr, wide.optim.start_lr) == (small.optim.lr / 2, small.optim.start_lr / 2)
    assert total_steps_of(wide, 60_000)[1] == 4312 and wide.optim.global_batch == 32
    assert (wide.mask, wide.method, wide.optim.ema) == (small.mask, small.method, small.optim.ema)
    # the 2-deep row: half the encoder's blocks (predictor untouched), else the small-batch recipe, 8.4 epochs
    shallow = make_config(rows["2 deep, batch 32, 8.4 epochs (15750 steps)"].overrides, 0)
    assert shallow.model == dataclasses.replace(small.model, depth=2) and small.model.depth == 4
    assert total_steps_of(shallow, 60_000)[1] == 15750 and shallow.optim.lr == small.optim.lr
    assert (shallow.mask, shallow.method, shallow.optim.ema) == (small.mask, small.method, small.optim.ema)
    # the rows past the 30-minute budget change only the epochs of the 4-deep or 2-deep small-batch recipe
    for name, epochs, recipe in (
        ("batch 32, 12 epochs (22500 steps)", 12, small),
        ("2 deep, batch 32, 24 epochs (45000 steps)", 24, shallow),
        ("2 deep, batch 32, 32 epochs (60000 steps)", 32, shallow),
    ):
        cfg = make_config(rows[name].overrides, 0)
        assert cfg.optim == dataclasses.replace(recipe.optim, epochs=epochs) and rows[name].seeds == 1
        assert (cfg.model, cfg.mask, cfg.method) == (recipe.model, recipe.mask, recipe.method)
    # every budget row that names its step count trains for exactly that many steps
    for row in GROUPS["training_budget"]:
        if m := re.search(r"\((\d+) steps\)", row.name):
            assert total_steps_of(make_config(row.overrides, 0), 60_000)[1] == int(m.group(1)), row.name
    # the baselines get exactly the same recipe: only the method (and MAE's own masks) differ
    for name, method in (
        ("MAE, batch 32, 0.8 epochs", "mae"),
        ("Invariant, batch 32, 0.8 epochs", "invariant"),
    ):
        other = make_config(rows[name].overrides, 0)
        assert other.method.name == method and other.optim == small.optim and other.model == small.model
    # the small-batch masking table: the same run as the small-batch row, only the mask strategy changes;
    # its multi-block row is that very run (shared, not retrained)
    masking = GROUPS["masking_batch32"]
    assert masking[0].overrides == rows["batch 32, 0.8 epochs (1500 steps)"].overrides
    for row, strategy in zip(masking, ("multiblock", "rasterized", "block", "random"), strict=True):
        cfg = make_config(row.overrides, 0)
        assert cfg.mask.strategy == strategy and row.seeds == 3
        assert (cfg.optim, cfg.model, cfg.method) == (small.optim, small.model, small.method)
        assert cfg.mask == dataclasses.replace(small.mask, strategy=strategy)


def _fake(key_overrides, seed, lp, with_init=False):
    run = {"key": run_key(key_overrides, seed), "linear_probe": lp, "knn": lp - 5, "low_shot": lp - 10,
           "rankme": 4.0, "count": 50.0, "position": 30.0, "train_seconds": 120.0,
           "probe_version": PROBE_VERSION}  # fmt: skip
    if with_init:
        run["init"] = {"linear_probe": 60.0, "knn": 55.0, "low_shot": 50.0, "rankme": 5.0}
    return run


def test_summary_gives_mean_and_std_over_seeds_and_marks_missing_runs():
    runs = [_fake((), s, lp, with_init=True) for s, lp in enumerate([70.0, 72.0, 74.0])]
    runs.append(_fake(GROUPS["architectures"][1].overrides, 0, 66.0))
    pixels = {"linear_probe": 84.0, "probe_version": PROBE_VERSION}
    summary = summarize({r["key"]: r for r in runs}, pixels, ["architectures", "masking"])
    ijepa, mae, inv, init, pixels = summary["architectures"]
    assert ijepa["n"] == 3 and ijepa["linear_probe"]["mean"] == pytest.approx(72.0)
    assert ijepa["linear_probe"]["std"] == pytest.approx(2.0)  # sample std of 70, 72, 74
    assert (mae["n"], mae["seeds"], mae["linear_probe"]["std"]) == (1, 3, 0.0)
    assert inv["n"] == 0 and "linear_probe" not in inv
    assert init["name"] == "random init" and init["linear_probe"]["mean"] == 60.0
    assert pixels["linear_probe"]["mean"] == 84.0
    assert summary["masking"][0]["n"] == 1 and summary["masking"][1]["n"] == 0
    table = summary_markdown(summary)
    assert "| I-JEPA | 3/3 | 72.0 ± 2.0 |" in table and "| Invariant (InfoNCE) | 0/3 | not run |" in table
    assert STALE_MARK not in table


def test_runs_probed_by_an_older_protocol_are_flagged_in_the_tables():
    runs = [_fake((), s, 70.0 + s, with_init=True) for s in range(3)]
    runs[1].pop("probe_version")  # a JSON written before probe versions existed: version 1
    runs.append(dict(_fake(GROUPS["architectures"][1].overrides, 0, 66.0), probe_version=PROBE_VERSION - 1))
    pixels = {"linear_probe": 84.0, "probe_version": PROBE_VERSION}
    summary = summarize({r["key"]: r for r in runs}, pixels, ["architectures"])
    ijepa, mae, inv, init, pix = summary["architectures"]
    # a row with re-run seeds averages those only; a row with none flags its old ones
    assert ijepa["n"] == 2 and ijepa["linear_probe"]["mean"] == 71.0 and "stale" not in ijepa
    assert init["n"] == 2 and "stale" not in init  # random init inherits its run's version
    assert mae["stale"] == 1 and mae["linear_probe"]["mean"] == 66.0
    assert "stale" not in inv and "stale" not in pix
    table = summary_markdown(summary)
    assert f"| MAE {STALE_MARK} | 1/3 |" in table and "| I-JEPA | 2/3 |" in table
    assert table.rstrip().endswith("re-runs it.")  # the footnote says what the mark means


def test_grid_cost_sums_finished_runs_per_group_and_counts_shared_runs_once():
    runs = [dict(_fake((), 0, 70.0), eval_seconds=60.0),  # the default run: in masking and n_targets
            dict(_fake(GROUPS["masking"][1].overrides, 0, 71.0), eval_seconds=30.0)]  # fmt: skip
    cost = grid_cost({r["key"]: r for r in runs}, ["masking", "n_targets"])
    assert cost["masking"] == {"runs": 2, "planned": 4, "train_minutes": 4.0, "probe_minutes": 1.5}
    assert cost["n_targets"] == {"runs": 1, "planned": 3, "train_minutes": 2.0, "probe_minutes": 1.0}
    assert cost["all"] == {"runs": 2, "planned": 6, "train_minutes": 4.0, "probe_minutes": 1.5}
    table = cost_table(cost)
    assert "| masking | 2/4 | 4 | 2 |" in table and "| all groups, each run once | 2/6 | 4 | 2 |" in table


@pytest.mark.slow
def test_quick_grid_runs_every_group_under_five_minutes_and_resumes(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "reproduce.py"),
        "--quick",
        "--quiet",
        "--out",
        str(tmp_path),
    ]
    # as a user runs it: torch's own thread count (conftest pins OMP_NUM_THREADS=1 for the notebooks' kernels,
    # which run beside pytest; here pytest only waits)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    run = dict(check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    t0 = time.perf_counter()
    subprocess.run(cmd, **run)
    elapsed = time.perf_counter() - t0
    assert elapsed < 300, f"quick grid took {elapsed:.0f} s"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(GROUPS) <= set(summary)
    # opt-in: planned, not run (its clean rows are the same runs as rows of the default groups)
    for got, row in zip(summary["nuisance"], GROUPS["nuisance"], strict=True):
        assert got["n"] == 0 or not any(o.startswith("data.nuisance=") for o in row.overrides), got
    assert any(got["n"] == 0 for got in summary["nuisance"])
    for g in DEFAULT_GROUPS:
        assert [r["name"] for r in summary[g]][: len(GROUPS[g])] == [r.name for r in GROUPS[g]]
        for row in summary[g]:
            assert row["n"] == row["seeds"], f"{g}/{row['name']} incomplete"
            assert 0 <= row["linear_probe"]["mean"] <= 100 and row["rankme"]["mean"] >= 1
    assert len(list((tmp_path / "runs").glob("*.json"))) == len(
        planned_runs(DEFAULT_GROUPS, seeds=QUICK_SEEDS)
    )
    assert not any((tmp_path / ".work").iterdir())  # checkpoints of finished runs are cleaned up
    assert (tmp_path / "summary.png").stat().st_size > 10_000
    md = (tmp_path / "summary.md").read_text()
    assert "### masking" in md and "| not run |" not in md.split("### nuisance")[0]
    n_runs = len(planned_runs(DEFAULT_GROUPS, seeds=QUICK_SEEDS))
    planned = len(planned_runs(GROUPS, seeds=QUICK_SEEDS))  # the nuisance runs too: planned, not run
    assert f"| all groups, each run once | {n_runs}/{planned} |" in md
    assert summary["_cost"]["all"]["train_minutes"] + summary["_cost"]["all"]["probe_minutes"] > 0.5
    # a second call finds every run done and trains nothing
    again = subprocess.run(cmd, **run)
    assert f"{len(planned_runs(DEFAULT_GROUPS, seeds=QUICK_SEEDS))} done, 0 to do" in again.stdout
    # running one group rewrites the summary files with every group's rows, not only its own
    subprocess.run([*cmd, "--groups", "n_targets"], **run)
    assert json.loads((tmp_path / "summary.json").read_text()).keys() == summary.keys()
    assert (tmp_path / "summary.md").read_text() == md
    # runs probed by an older protocol are flagged, then re-run (same numbers: training is deterministic)
    row = GROUPS["n_targets"][0]
    seeds = min(row.seeds, QUICK_SEEDS)
    for seed in range(seeds):
        stale = tmp_path / "runs" / f"{run_key(row.overrides, seed)}.json"
        stale.write_text(json.dumps(dict(json.loads(stale.read_text()), probe_version=PROBE_VERSION - 1)))
    subprocess.run([*cmd, "--summary-only"], **run)
    assert f"| {row.name} {STALE_MARK} |" in (tmp_path / "summary.md").read_text()
    rerun = subprocess.run([*cmd, "--groups", "n_targets"], **run)
    assert f", {seeds} to do" in rerun.stdout
    after = json.loads((tmp_path / "summary.json").read_text())["n_targets"][0]
    before = summary["n_targets"][0]
    assert STALE_MARK not in (tmp_path / "summary.md").read_text()
    assert {m: after[m] for m in METRICS} == {m: before[m] for m in METRICS}  # only the timing may differ


def test_official_recipe_rows_are_the_course_default_plus_one_switch_each():
    from jepa_lite.core.config import config_to_dict, load_config

    rows = GROUPS["official_recipe"]
    default = make_config(rows[0].overrides, 0)
    course = load_config("fmnist_vit_tiny")
    assert config_to_dict(default) | {"name": ""} == config_to_dict(course) | {"name": ""}
    switches = {
        ("mask", "context_fill"): "pad",
        ("model", "init"): "official",
        ("method", "crop_scale"): (0.3, 1.0),
    }
    for row, ((section, key), value) in zip(rows[1:], switches.items()):
        cfg = make_config(row.overrides, 0)
        assert getattr(getattr(cfg, section), key) == value
        expected = config_to_dict(default)
        expected[section][key] = list(value) if isinstance(value, tuple) else value
        assert config_to_dict(cfg) | {"name": ""} == expected | {"name": ""}  # nothing else differs


def test_nuisance_rows_compare_three_methods_at_one_budget_on_the_same_kinds_of_images():
    from jepa_lite.core.config import check_config

    rows = GROUPS["nuisance"]
    assert len(rows) == 3 * 7 and all(r.seeds == 2 for r in rows)
    cfgs = {r.name: check_config(make_config(r.overrides, 0)) for r in rows}
    assert len({total_steps_of(c, 60_000)[1] for c in cfgs.values()}) == 1  # the same steps for every row
    settings = {(c.data.nuisance, c.data.nuisance_strength) for c in cfgs.values()}
    assert settings == {("none", 0.0)} | {(k, s) for k in ("noise", "stripes") for s in (0.25, 0.5, 1.0)}
    for method in NUISANCE_METHODS:
        mine = [c for n, c in cfgs.items() if n.rsplit(", ", 1)[0] == method]
        assert len(mine) == 7 and len({(c.data.nuisance, c.data.nuisance_strength) for c in mine}) == 7
    pix = cfgs["I-JEPA, pixel targets, noise 0.5"]
    assert (pix.method.name, pix.method.pixel_decode, pix.mask.strategy) == ("mae", "per_block", "multiblock")
    assert cfgs["MAE, clean"].mask.strategy == "random"
    assert "nuisance" not in DEFAULT_GROUPS  # hours of CPU: only when asked for


def test_a_nuisance_run_is_probed_on_images_with_the_same_detail(tmp_path):
    from jepa_lite.lab.grid import run_grid

    groups = {"nuisance": [GROUPS["nuisance"][3]]}  # I-JEPA, noise 1.0
    assert groups["nuisance"][0].name == "I-JEPA, noise 1.0"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(GROUPS, "nuisance", groups["nuisance"])
        mp.setattr("jepa_lite.lab.grid.ProbeSets", _RecordingProbes)
        run_grid(["nuisance"], tmp_path, quick=True, seeds=1, progress=False)
    assert _RecordingProbes.built == [("noise", 1.0)]


class _RecordingProbes:
    """Stands in for ProbeSets: records which images it was built for, returns fixed metrics."""

    built: list = []

    def __init__(self, cfg, *, quick=False):
        from jepa_lite.core.build import build_split

        type(self).built = [*type(self).built, (cfg.data.nuisance, cfg.data.nuisance_strength)]
        self.test = build_split(cfg, train=False, limit=64)

    def evaluate(self, encoder, progress=True):
        return {m: 50.0 for m in METRICS}


def test_why_mae_leads_rows_are_the_checkpoint_recipe_at_an_eighth_plus_one_change_each():
    from jepa_lite.core.config import config_to_dict, load_config
    from jepa_lite.lab.pretrained import RECIPES

    rows = {r.name: r for r in GROUPS["why_mae_leads"]}
    assert all(r.seeds == 2 for r in rows.values())
    ijepa = make_config(rows["I-JEPA"].overrides, 0)
    course = load_config("fmnist_vit_tiny")
    assert config_to_dict(ijepa) | {"name": "", "optim": None} == config_to_dict(course) | {
        "name": "",
        "optim": None,
    }
    shipped_epochs = {
        n: float(o.split("=")[1]) for n, r in RECIPES.items() for o in r.overrides if "epochs" in o
    }
    assert ijepa.optim.epochs == shipped_epochs["ijepa"] / 8
    assert make_config(rows["MAE, same CPU time"].overrides, 0).optim.epochs == shipped_epochs["mae"] / 8
    assert make_config(rows["MAE, same steps"].overrides, 0).optim.epochs == ijepa.optim.epochs
    base = config_to_dict(ijepa)
    changed = {
        "MAE loss on I-JEPA's multi-block masks": {("method", "name"): "mae"},
        "EMA 0.99 -> 0.999 (a target that moves faster)": {("optim", "ema"): [0.99, 0.999]},
        "every context patch kept": {("mask", "context_fill"): "pad"},
        "loss on garment patches only": {("method", "foreground_targets"): True},
        "14x14 grid (2-px patches), same CPU time": {("model", "patch_size"): 2, ("optim", "epochs"): 0.77},
    }
    for name, switches in changed.items():
        got = config_to_dict(make_config(rows[name].overrides, 0))
        expected = json.loads(json.dumps(base))
        for (section, key), value in switches.items():
            expected[section][key] = value
        assert got == expected, name  # nothing else differs


def test_shards_split_the_rows_of_a_plan_without_overlap():
    from jepa_lite.lab.grid import _shard

    plan = planned_runs(["why_mae_leads"])
    parts = [_shard(plan, i, 3) for i in range(3)]
    assert sorted(p for part in parts for p in part) == sorted(plan)
    rows = [{o for o, _ in part} for part in parts]
    assert not (rows[0] & rows[1]) and not (rows[1] & rows[2]) and not (rows[0] & rows[2])
    assert _shard(plan, 0, 1) == plan
    with pytest.raises(ValueError, match="shard 2/2"):
        _shard(plan, 2, 2)


def test_beyond_ijepa_shares_why_mae_leads_baselines_and_changes_one_thing_per_candidate():
    from jepa_lite.core.config import config_to_dict

    mine = {r.name: r for r in GROUPS["beyond_ijepa"]}
    theirs = {r.name: r for r in GROUPS["why_mae_leads"]}
    assert mine["I-JEPA"].overrides == theirs["I-JEPA"].overrides  # the same runs, not run twice
    assert mine["MAE, same CPU time"].overrides == theirs["MAE, same CPU time"].overrides
    assert (
        mine["I-JEPA, EMA 0.99 -> 0.999"].overrides
        == theirs["EMA 0.99 -> 0.999 (a target that moves faster)"].overrides
    )
    base = config_to_dict(make_config(mine["I-JEPA"].overrides, 0))
    changed = {
        "I-JEPA + SIGReg, no EMA, same CPU time": {
            ("method", "name"): "ijepa_sigreg",
            ("optim", "epochs"): 1.38,
        },
        "LeJEPA, 2 global + 2 local views, same CPU time": {
            ("method", "name"): "lejepa",
            ("optim", "epochs"): 1.5,
        },
        "LeJEPA, 2 global views, same CPU time": {
            ("method", "name"): "lejepa",
            ("method", "views"): [2, 0],
            ("optim", "epochs"): 2.89,
        },
        "I-JEPA, EMA 0.99 -> 0.999, L2 loss": {("optim", "ema"): [0.99, 0.999], ("method", "loss"): "l2"},
        "I-JEPA, EMA 0.99 -> 0.999, 1-deep predictor, same CPU time": {
            ("optim", "ema"): [0.99, 0.999],
            ("model", "predictor_depth"): 1,
            ("optim", "epochs"): 4.9,
        },
    }
    for name, switches in changed.items():
        expected = json.loads(json.dumps(base))
        for (section, key), value in switches.items():
            expected[section][key] = value
        assert config_to_dict(make_config(mine[name].overrides, 0)) == expected, name
    assert all(r.seeds == 2 for r in mine.values())


def test_beyond_ijepa_candidates_get_the_ijepa_rows_cpu_time():
    """Each candidate's epochs x its step time, from the side-by-side timing, is I-JEPA's within 5%."""
    timing = json.loads(
        (Path(__file__).resolve().parents[1] / "results" / "beyond_ijepa_step_seconds.json").read_text()
    )
    seconds = timing["seconds_per_step"]
    budget = 3 * seconds["I-JEPA"]
    for row in GROUPS["beyond_ijepa"]:
        if row.name.startswith("MAE"):
            continue
        epochs = make_config(row.overrides, 0).optim.epochs
        assert abs(epochs * seconds[row.name] / budget - 1) < 0.05, row.name


def test_the_tuned_course_checkpoint_is_the_screened_row_at_eight_times_its_budget():
    """The fourth course checkpoint trains what the `beyond_ijepa` screen measured, for the course budget."""
    from jepa_lite.core.config import config_to_dict
    from jepa_lite.lab.pretrained import BASE, RECIPES

    row = next(r for r in GROUPS["beyond_ijepa"] if "1-deep predictor" in r.name)
    screened = make_config(row.overrides, 0)
    shipped = make_config(RECIPES["ijepa_tuned"].overrides, RECIPES["ijepa_tuned"].seed, base=BASE)
    assert shipped.optim.epochs == pytest.approx(8 * screened.optim.epochs)
    assert config_to_dict(shipped) | {"name": "", "optim": None} == config_to_dict(screened) | {
        "name": "",
        "optim": None,
    }
    assert config_to_dict(shipped)["optim"] | {"epochs": 0} == config_to_dict(screened)["optim"] | {"epochs": 0}
