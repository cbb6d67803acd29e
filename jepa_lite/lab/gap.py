"""Why MAE leads I-JEPA at equal CPU time here: the gap split into cost per step and progress per step, and
one verdict per candidate cause, read from the `why_mae_leads` rows of `results/summary.json` (notebook 06).

    gap at equal time = (MAE, same steps - I-JEPA)            progress per step
                      + (MAE, same CPU time - MAE, same steps) what MAE's cheaper steps buy

A cause is an ablation row set against the row it changes. Its effect is the difference of their seed means;
it counts as real when it exceeds twice the standard error of that difference, with each row's seed spread no
smaller than `SEED_STD_FLOOR` (one seed has no spread of its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GROUP = "why_mae_leads"
IJEPA, MAE_STEPS, MAE_TIME = "I-JEPA", "MAE, same steps", "MAE, same CPU time"
# the trained encoder's std over three seeds of the course default run (results/default_run.md): 0.3 points
# of linear probe, k-NN and 1% low-shot alike
SEED_STD_FLOOR = 0.3


@dataclass(frozen=True)
class Cause:
    """A candidate cause: the ablation `row` against `base`; `supported_if` is the sign of the effect (row -
    base) that would support it (+1: removing the cause helps I-JEPA; -1: the row loses what MAE had)."""

    name: str
    row: str
    base: str = IJEPA
    supported_if: int = 1


CAUSES = (
    Cause("multi-block masks learn less per step", "MAE loss on I-JEPA's multi-block masks", MAE_STEPS, -1),
    Cause("the EMA target moves too slowly", "EMA 0.99 -> 0.999 (a target that moves faster)"),
    Cause("the context is subsampled to the batch's shortest", "every context patch kept"),
    Cause("background targets are trivially predictable", "loss on garment patches only"),
    Cause("the 7x7 grid is too coarse for blocks", "14x14 grid (2-px patches), same CPU time"),
)


def _mean_std(row: dict, metric: str) -> tuple[float, float, int]:
    stat = row[metric]
    return stat["mean"], max(stat["std"], SEED_STD_FLOOR), row["n"]


def difference(rows: dict[str, dict], a: str, b: str, metric: str) -> tuple[float, float]:
    """Mean of row `a` minus mean of row `b` on `metric`, and twice its standard error (the noise band)."""
    (ma, sa, na), (mb, sb, nb) = _mean_std(rows[a], metric), _mean_std(rows[b], metric)
    return ma - mb, 2 * math.sqrt(sa**2 / na + sb**2 / nb)


def decompose(rows: dict[str, dict], metric: str) -> dict[str, float]:
    """The equal-time gap MAE - I-JEPA on `metric` and its two parts (points; they sum to the gap)."""
    per_step = difference(rows, MAE_STEPS, IJEPA, metric)[0]
    cheaper = difference(rows, MAE_TIME, MAE_STEPS, metric)[0]
    return {"gap": per_step + cheaper, "progress per step": per_step, "cost per step": cheaper}


def verdict(rows: dict[str, dict], cause: Cause, metric: str) -> dict:
    """{cause, effect, noise, seeds, verdict}: 'supported' when the effect has the sign that supports the
    cause and exceeds the noise band, 'rejected' when it has the other sign and
    exceeds it, else 'within noise'."""
    effect, noise = difference(rows, cause.row, cause.base, metric)
    if abs(effect) <= noise:
        word = "within noise"
    else:
        word = "supported" if effect * cause.supported_if > 0 else "rejected"
    seeds = min(rows[cause.row]["n"], rows[cause.base]["n"])
    return {"cause": cause.name, "effect": effect, "noise": noise, "seeds": seeds, "verdict": word}


def rows_of(summary: dict) -> dict[str, dict]:
    """The group's rows that have at least one finished seed, by name."""
    return {r["name"]: r for r in summary.get(GROUP, []) if r.get("n")}


def split_rows(summary: dict, metrics: tuple[str, ...] = ("linear_probe", "knn")) -> dict:
    """The rows that split the gap, where run: {name: {metric: (mean, std)}}, for `viz.plot_gap`."""
    rows = rows_of(summary)
    return {
        name: {m: (rows[name][m]["mean"], rows[name][m]["std"]) for m in metrics}
        for name in (IJEPA, MAE_STEPS, MAE_TIME)
        if name in rows
    }


def verdicts(summary: dict, metrics: tuple[str, ...] = ("linear_probe", "knn")) -> list[dict]:
    """One verdict per cause and metric whose two rows have finished seeds (a table for notebook 06)."""
    rows = rows_of(summary)
    out = []
    for cause in CAUSES:
        if cause.row in rows and cause.base in rows:
            out += [{"metric": m, **verdict(rows, cause, m)} for m in metrics]
    return out
