"""Human-readable model cards: `model_server/cards/NAME.md` and its confusion matrix `NAME_confusion.png`.

    python -m model_server.cards --model c3d
    python -m model_server.cards --all          # every zoo model with weights

The markdown is built from the trainer's JSON card (model_server/weights/NAME.json), the architecture's
docstring and the weights file itself (its sha256 is recomputed and must match the card). For models
trained on the motion dataset, the confusion matrix is computed here, with the served fp16 weights, on
the test split the card names (same seed, same clips per class).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
from pathlib import Path

import numpy as np
import torch

from model_server import attack_set, dataset, zoo

CARDS_DIR = Path(__file__).resolve().parent / "cards"


def card_md_path(name: str, cards_dir: Path = CARDS_DIR) -> Path:
    return cards_dir / f"{name}.md"


def confusion_png_path(name: str, cards_dir: Path = CARDS_DIR) -> Path:
    return cards_dir / f"{name}_confusion.png"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.inference_mode()
def confusion_matrix(name: str, threads: int = 2, chunk: int = 50) -> np.ndarray:
    """counts[true, predicted] on the card's test split, with the served (fp16-stored) weights."""
    card = zoo.load_card(name)
    torch.set_num_threads(threads)
    per_class = attack_set.clips_per_class_in_test(card)
    clips, labels = dataset.generate_split("test", per_class, attack_set.card_seed(card))
    model = zoo.load_trained(name)
    n = len(dataset.CLASS_NAMES)
    counts = np.zeros((n, n), dtype=np.int64)
    for start in range(0, len(clips), chunk):
        predicted = model(zoo.to_model_input(clips[start : start + chunk])).argmax(1).numpy()
        np.add.at(counts, (labels[start : start + chunk], predicted), 1)
    return counts


def plot_confusion(counts: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = dataset.CLASS_NAMES
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.0, 5.2), dpi=80)
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(names)):
        for j in range(len(names)):
            if counts[i, j]:
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _architecture(name: str) -> tuple[str, str]:
    builder = zoo.entry(name).builder
    label = f"`{builder.__module__}.{builder.__qualname__}`"
    return label, inspect.getdoc(builder) or "(no docstring)"


def _accuracy_line(card: dict) -> str:
    if card.get("accuracy") is None:  # the pretrained ImageNet model: no offline ImageNet test set
        return f"- Test accuracy: not measured here ({card.get('accuracy_note', 'pretrained model')})"
    line = f"- Test accuracy: **{card['accuracy']:.2%}** on {card.get('test_clips', '?')} test clips"
    return line + (f" (validation {card['val_accuracy']:.2%})" if "val_accuracy" in card else "")


def render_markdown(name: str, counts: np.ndarray | None, cards_dir: Path = CARDS_DIR) -> str:
    card = zoo.load_card(name)
    weights = zoo.weights_path(name)
    sha = sha256_of(weights)
    if sha != card.get("weights_sha256"):
        raise ValueError(f"{name}: {weights} has sha256 {sha}, the card says {card.get('weights_sha256')}")
    spec = zoo.entry(name).input
    arch, doc = _architecture(name)
    inp = card.get("input", {})
    lines = [
        f"# Model card: `{name}`",
        "",
        "## Architecture",
        "",
        f"{arch}, {card.get('parameters', 'unknown'):,} parameters."
        if isinstance(card.get("parameters"), int)
        else f"{arch}.",
        "",
        doc,
        "",
        "## Input",
        "",
        f"- uint8 clips N×T×H×W×3 (layout {inp.get('layout', 'NTHWC')}), T={spec.frames}, "
        f"H={spec.height}, W={spec.width}, RGB 0–255; the model takes `zoo.to_model_input(clips)` "
        "(float N×3×T×H×W, raw 0–255) and normalises inside itself.",
        f"- Labels ({len(card.get('labels', []))}): " + ", ".join(f"`{x}`" for x in card.get("labels", [])),
        "",
        "## Training",
        "",
        f"- Dataset: {attack_set.card_dataset(card)}"
        + (f", seed {attack_set.card_seed(card)}" if attack_set.card_dataset(card) == "motion" else ""),
        f"- Command: `{card.get('train_command', 'unknown')}`",
    ]
    if "train_seconds" in card:
        lines.append(f"- Training time: {card['train_seconds']} s (torch {card.get('torch', '?')}, CPU)")
    if "photos" in card:
        for split, photos in card["photos"].items():
            lines.append(f"- {split} photographs: {', '.join(photos)}")
    lines += [
        "",
        "## Accuracy",
        "",
        _accuracy_line(card),
    ]
    if counts is not None:
        recomputed = np.trace(counts) / counts.sum()
        lines += [
            f"- Recomputed here from the served weights: {recomputed:.2%} on {counts.sum()} clips",
            "",
            f"![confusion matrix]({confusion_png_path(name, cards_dir).name})",
        ]
    entries = card.get("attack_set")
    size = f"{len(entries)} clips" if isinstance(entries, list) else "not computed"
    if isinstance(entries, list) and attack_set.card_dataset(card) == "motion":
        size += f" ({len(entries) // len(dataset.CLASS_NAMES)} correctly classified test clips per class)"
    lines += [
        "",
        "## Weights",
        "",
        f"- File: `model_server/weights/{weights.name}`, {weights.stat().st_size / 1e6:.2f} MB, "
        f"{card.get('weights_dtype', 'float16')}",
        f"- sha256: `{sha}`",
        "",
        "## Attack set",
        "",
        f"- {size}; `model_server.attack_set.clips('{name}')` materialises it.",
        "",
    ]
    return "\n".join(lines)


def write(name: str, cards_dir: Path = CARDS_DIR, threads: int = 2) -> Path:
    card = zoo.load_card(name)
    counts = None
    if attack_set.card_dataset(card) == attack_set.MOTION_DATASET:
        counts = confusion_matrix(name, threads)
        accuracy = np.trace(counts) / counts.sum()
        plot_confusion(counts, f"{name}: test accuracy {accuracy:.1%} ({counts.sum()} clips)",
                       confusion_png_path(name, cards_dir))  # fmt: skip
    path = card_md_path(name, cards_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(name, counts, cards_dir))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write markdown model cards and confusion matrices.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", choices=sorted(zoo.MODELS))
    group.add_argument("--all", action="store_true", help="every zoo model with weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=CARDS_DIR)
    args = parser.parse_args(argv)
    for name in sorted(zoo.MODELS) if args.all else [args.model]:
        if not zoo.weights_path(name).exists() or not zoo.card_path(name).exists():
            print(f"{name}: no weights or card, skipped")
            continue
        path = write(name, args.out, args.threads)
        print(f"{name}: wrote {path}")


if __name__ == "__main__":
    main()
