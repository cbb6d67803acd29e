"""jepa_lite.lab.gap: the equal-time gap's two parts sum to it, and a cause's verdict follows its effect and noise."""

import pytest

from jepa_lite.lab import gap


def _row(name: str, mean: float, std: float = 0.0, n: int = 2) -> dict:
    return {"name": name, "n": n, "seeds": 2, "linear_probe": {"mean": mean, "std": std}}


def _summary(**rows: float) -> dict:
    return {gap.GROUP: [_row(name, mean) for name, mean in rows.items()]}


def test_decomposition_parts_sum_to_the_equal_time_gap():
    rows = {
        r["name"]: r
        for r in _summary(**{gap.IJEPA: 80.0, gap.MAE_STEPS: 82.5, gap.MAE_TIME: 84.0})[gap.GROUP]
    }
    parts = gap.decompose(rows, "linear_probe")
    assert parts["progress per step"] == pytest.approx(2.5)
    assert parts["cost per step"] == pytest.approx(1.5)
    assert parts["gap"] == pytest.approx(4.0)


def test_noise_band_is_twice_the_standard_error_with_the_seed_floor():
    rows = {"a": _row("a", 1.0, std=1.0, n=4), "b": _row("b", 0.0, std=0.0, n=1)}
    effect, noise = gap.difference(rows, "a", "b", "linear_probe")
    assert effect == 1.0
    assert noise == pytest.approx(2 * (1.0 / 4 + gap.SEED_STD_FLOOR**2 / 1) ** 0.5)


@pytest.mark.parametrize(
    "delta, sign, expected",
    [(2.0, 1, "supported"), (-2.0, 1, "rejected"), (0.3, 1, "within noise"), (-2.0, -1, "supported")],
)
def test_verdict_follows_the_sign_and_size_of_the_effect(delta, sign, expected):
    rows = {"base": _row("base", 80.0), "row": _row("row", 80.0 + delta)}
    got = gap.verdict(rows, gap.Cause("c", "row", "base", sign), "linear_probe")
    assert got["verdict"] == expected and got["effect"] == pytest.approx(delta) and got["seeds"] == 2


def test_verdicts_skip_causes_whose_rows_have_not_run():
    summary = _summary(**{gap.IJEPA: 80.0, "every context patch kept": 81.0})
    summary[gap.GROUP].append({"name": "loss on garment patches only", "n": 0, "seeds": 2})
    got = gap.verdicts(summary, metrics=("linear_probe",))
    assert [v["cause"] for v in got] == ["the context is subsampled to the batch's shortest"]


def test_every_cause_names_a_row_of_the_group():
    from jepa_lite.lab.experiments import GROUPS

    names = {r.name for r in GROUPS[gap.GROUP]}
    assert {c.row for c in gap.CAUSES} | {c.base for c in gap.CAUSES} <= names
    assert {gap.IJEPA, gap.MAE_STEPS, gap.MAE_TIME} <= names
