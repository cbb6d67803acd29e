"""Draw the I-JEPA step diagram of the README (docs/ijepa_step.png) from `jepa_lite.diagrams`, on a real
Fashion-MNIST image with multi-block masks of the course's 7x7 grid.

    python scripts/draw_diagram.py            # writes docs/ijepa_step.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from jepa_lite.core.masks import sample_masks  # noqa: E402
from jepa_lite.data import build_dataset  # noqa: E402
from jepa_lite.diagrams import plot_ijepa_architecture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "ijepa_step.png"), help="PNG file to write")
    p.add_argument("--index", type=int, default=0, help="which training image to draw")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks")
    args = p.parse_args(argv)
    image = build_dataset("fmnist", train=True, image_size=28, limit=args.index + 1)[args.index][0]
    context_idx, target_idx = sample_masks(1, 7, generator=torch.Generator().manual_seed(args.seed))
    fig = plot_ijepa_architecture(image, context_idx[0], target_idx[0], 7)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
