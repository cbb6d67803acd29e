"""What the predictor predicts inside the blue box, drawn and measured with the blue-box decoder.

For each test image one target block of the paper's multi-block masks is the *box*; the predictor sees only
the context block (minus every target block) and outputs a representation for each patch of the box. The
decoder (`jepa_lite.lab.decoder.BlockDecoder`, trained on the frozen target encoder's representations of real
blocks) turns a block representation into pixels, with a latent z for what the representation leaves open.
Three representations of the same box are compared:

- `"predictor"`: what I-JEPA predicts from the context of this image;
- `"target"`: the target encoder's representation of the true box (the decoder's ceiling: the best any
  prediction could do);
- `"shuffled context"`: the predictor run on the context of *another* image, at this box's positions (the
  floor: it knows where the box is, and what an average image holds there, but nothing of this image).

Two numbers per representation, over a fixed test set: the squared pixel error inside the box (mean over
samples), and the accuracy of a frozen classifier on the image with the box filled in. A representation that
knows *what* is in the box fills it with the right kind of garment part, and the classifier agrees.

    scores = fill_in_scores(decoder, method, images, labels, classify, seed=0)
    fig = plot_blue_boxes(decoder, method, images[:6], seed=0)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ..core.evaluate import fit_linear_classifier
from ..core.features import extract_features
from ..core.masks import sample_masks
from ..core.models import gather_tokens, patchify
from .decoder import BlockDecoder, unpatchify_block
from .pretrained import WEIGHTS_DIR

__all__ = [
    "SOURCES",
    "DECODER",
    "decoder_arch",
    "decoder_available",
    "load_decoder",
    "linear_judge",
    "eval_masks",
    "block_representations",
    "fill_in",
    "fill_in_scores",
    "plot_blue_boxes",
]

SOURCES = ("predictor", "target", "shuffled context")
DECODER = "ijepa_decoder"  # shipped beside the course checkpoints: DECODER.safetensors and DECODER.json
DECODER_COMMAND = "python scripts/train_decoder.py"


def decoder_arch(decoder: BlockDecoder) -> dict:
    """What rebuilds a `BlockDecoder` before its weights are loaded (kept in the decoder's card)."""
    return {
        "grid": list(decoder.grid),
        "repr_dim": decoder.embed.in_features,
        "patch_size": decoder.patch_size,
        "in_chans": decoder.in_chans,
        "dim": decoder.embed.out_features,
        "depth": len(decoder.blocks),
        "num_heads": decoder.blocks[0].attn.num_heads,
        "latent_dim": decoder.latent_dim,
    }


def _decoder_paths(root: str | Path | None) -> tuple[Path, Path]:
    folder = Path(root) if root is not None else WEIGHTS_DIR
    return folder / f"{DECODER}.safetensors", folder / f"{DECODER}.json"


def decoder_available(root: str | Path | None = None) -> bool:
    """Whether the blue-box decoder's weights and card are present (in `root`, default the package's)."""
    return all(p.is_file() for p in _decoder_paths(root))


def load_decoder(root: str | Path | None = None) -> tuple[BlockDecoder, dict]:
    """The shipped blue-box decoder (strictly loaded, eval mode) and its card; a clear error if absent."""
    weights, card_path = _decoder_paths(root)
    if not decoder_available(root):
        raise FileNotFoundError(
            f"the blue-box decoder is not in {weights.parent}; train it with `{DECODER_COMMAND}`"
        )
    card = json.loads(card_path.read_text())
    arch = dict(card["decoder"])
    decoder = BlockDecoder(
        tuple(arch.pop("grid")), arch.pop("repr_dim"), arch.pop("patch_size"), arch.pop("in_chans"), **arch
    )
    decoder.load_state_dict(load_file(str(weights)), strict=True)
    return decoder.eval().requires_grad_(False), card


def linear_judge(encoder: nn.Module, dataset, *, progress: bool = False) -> Callable[[Tensor], Tensor]:
    """A linear probe of `encoder`'s pooled features fit on the clean images of `dataset` (the probe of
    `evaluate.linear_probe`), as a classifier: images [B, C, H, W] -> labels [B]. One fixed judge for every
    filled-in image."""
    x, y = extract_features(encoder, dataset, progress=progress, precision="fp32")
    predict = fit_linear_classifier(x, y)

    def classify(images: Tensor) -> Tensor:
        dummy = torch.zeros(len(images), dtype=torch.long)
        feats, _ = extract_features(encoder, TensorDataset(images, dummy), progress=False, precision="fp32")
        return predict(feats)

    return classify


def eval_masks(n: int, grid: tuple[int, int], seed: int) -> tuple[Tensor, Tensor]:
    """Multi-block masks for `n` images, the same for a given seed: context_idx [n, Kc] and the box [n, K]
    (the first target block of each image; the context excludes all four target blocks, as in training)."""
    context_idx, target_idx = sample_masks(n, grid, generator=torch.Generator().manual_seed(seed))
    return context_idx, target_idx[:, 0]


@torch.no_grad()
def block_representations(
    method: nn.Module, images: Tensor, context_idx: Tensor, box: Tensor, source: str
) -> Tensor:
    """The representation [B, K, D] of the box `box` [B, K] of each image [B, C, H, W] from `source`."""
    if source == "target":
        return method.targets(images, box[:, None])[:, 0]
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "shuffled context":  # the context of the next image in the batch, this image's box
        images, context_idx = images.roll(1, 0), context_idx.roll(1, 0)
    context = method.context_encoder(images, context_idx)
    return method.predictor(context, context_idx, box[:, None])[:, 0]


@torch.no_grad()
def fill_in(
    decoder: BlockDecoder,
    method: nn.Module,
    images: Tensor,
    context_idx: Tensor,
    box: Tensor,
    source: str,
    n: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`n` decoder samples pasted into the box of each image: [n, B, C, H, W] (the rest is the true image)."""
    reps = block_representations(method, images, context_idx, box, source=source)
    samples = decoder.sample(reps, box, n=n, generator=generator)  # [n, B, K, p*p*C]
    return torch.stack([unpatchify_block(images, box, s) for s in samples])


@torch.no_grad()
def fill_in_scores(
    decoder: BlockDecoder,
    method: nn.Module,
    images: Tensor,
    labels: Tensor,
    classify: Callable[[Tensor], Tensor],
    *,
    n_samples: int = 4,
    batch_size: int = 250,
    seed: int = 0,
    sources: tuple[str, ...] = SOURCES,
) -> dict[str, dict[str, float]]:
    """For each source: `box_mse`, the squared error per pixel inside the box (data units, mean over images
    and `n_samples` samples), and `class_acc`, the accuracy (%) of `classify(images [B, C, H, W]) -> labels
    [B]` on the filled-in images. Deterministic for a given seed (masks and z are seeded per batch)."""
    p = decoder.patch_size
    sums = {s: {"box_mse": 0.0, "class_acc": 0.0} for s in sources}
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        context_idx, box = eval_masks(len(x), decoder.grid, seed + start)
        truth = gather_tokens(patchify(x, p), box)  # [B, K, p*p*C]
        for source in sources:
            gen = torch.Generator().manual_seed(seed + start)
            filled = fill_in(
                decoder, method, x, context_idx, box=box, source=source, n=n_samples, generator=gen
            )  # [n, B, C, H, W]
            drawn = torch.stack([gather_tokens(patchify(f, p), box) for f in filled])
            sums[source]["box_mse"] += (drawn - truth).pow(2).mean(dim=(0, 2, 3)).sum().item()
            hits = torch.stack([classify(f).to(y.device) == y for f in filled]).float().mean(0)
            sums[source]["class_acc"] += 100.0 * hits.sum().item()
    return {s: {k: v / len(images) for k, v in row.items()} for s, row in sums.items()}


def plot_blue_boxes(
    decoder: BlockDecoder,
    method: nn.Module,
    images: Tensor,
    *,
    n_samples: int = 3,
    seed: int = 0,
    sources: tuple[str, ...] = SOURCES,
    title: str = "What the representation of the blue box says, drawn by the decoder",
):
    """One row per image: the context the predictor sees (the rest greyed), the true image, then `n_samples`
    decoder samples inside the box for each source. Returns the figure."""
    context_idx, box = eval_masks(len(images), decoder.grid, seed)
    fills = {
        s: fill_in(
            decoder,
            method,
            images,
            context_idx,
            box=box,
            source=s,
            n=n_samples,
            generator=torch.Generator().manual_seed(seed),
        )
        for s in sources
    }
    p, (gh, gw) = decoder.patch_size, decoder.grid
    seen = torch.zeros(len(images), gh * gw).scatter_(1, context_idx, 1.0)
    lo, hi = (
        images.amin().item(),
        images.amax().item(),
    )  # one grey scale for every panel (samples may overshoot)
    grey = lo + 0.35 * (hi - lo)
    mask = seen.reshape(-1, 1, gh, gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
    context_view = images * mask + grey * (1 - mask)
    panels = [("context seen", context_view), ("true", images)]  # (title, images [B, C, H, W])
    for s in sources:
        panels += [(s if i == n_samples // 2 else "", fills[s][i]) for i in range(n_samples)]
    fig, axes = plt.subplots(
        len(images), len(panels), figsize=(1.1 * len(panels), 1.15 * len(images)), squeeze=False
    )
    for r in range(len(images)):
        rows, cols = box[r] // gw, box[r] % gw
        top, left = rows.min().item() * p, cols.min().item() * p
        height, width = (rows.max().item() + 1) * p - top, (cols.max().item() + 1) * p - left
        for c, (name, view) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(view[r].permute(1, 2, 0).squeeze(-1).float().numpy(), cmap="gray", vmin=lo, vmax=hi)
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, ec="#1f77ff", lw=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
