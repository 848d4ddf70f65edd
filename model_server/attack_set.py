"""The attack set: the standard input of every benchmark, fixed per model in its card.

For each zoo model trained on the motion dataset: the first `PER_CLASS` TEST-split clips of every class
(in index order, regenerated with the card's seed) that the model classifies correctly. The card stores
only `"attack_set": [{"label": l, "index": i}, …]`; `clips(model)` renders them again — every clip has
its own seed, so clip (label, index) is the same array that `dataset.generate_split("test", …)` holds
at that position, and the one the card's test accuracy was measured on.

    python -m model_server.attack_set --model c3d      # compute and write it into c3d's card
    python -m model_server.attack_set --all            # every zoo model with weights

Models whose card names another dataset (the ImageNet model: `"dataset": "imagenet-real-footage"`)
keep their own attack set and are left alone here.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex

import numpy as np
import torch

from model_server import dataset, zoo

PER_CLASS = 2
MOTION_DATASET = "motion"


def card_dataset(card: dict) -> str:
    """The dataset a card's model was trained on; cards written before the field existed are motion."""
    return card.get("dataset", MOTION_DATASET)


def card_seed(card: dict) -> int:
    """The dataset seed of the card: its `seed`, else the --seed of its train command, else train.py's 0."""
    if "seed" in card:
        return int(card["seed"])
    words = shlex.split(card.get("train_command", ""))
    for i, word in enumerate(words):
        if word == "--seed" and i + 1 < len(words):
            return int(words[i + 1])
        if word.startswith("--seed="):
            return int(word.split("=", 1)[1])
    return 0


def clips_per_class_in_test(card: dict) -> int:
    return int(card.get("test_clips", 1000)) // len(dataset.CLASS_NAMES)


def render(label: int, index: int, seed: int) -> np.ndarray:
    """Test clip `index` of class `label` (T×H×W×3 uint8), as generate_split('test', n, seed) makes it."""
    rng = dataset._clip_rng(seed, "test", label, index)
    return dataset._render(rng, label, dataset.split_photos("test"))


def is_motion_model(name: str) -> bool:
    return zoo.card_path(name).exists() and card_dataset(zoo.load_card(name)) == MOTION_DATASET


@torch.inference_mode()
def compute(name: str, per_class: int = PER_CLASS) -> list[dict[str, int]]:
    """The first `per_class` correctly classified test clips of each class, as card entries."""
    card = zoo.load_card(name)
    if card_dataset(card) != MOTION_DATASET:
        raise ValueError(f"{name} was trained on {card_dataset(card)!r}, not the motion dataset")
    model = zoo.load_trained(name)
    seed, limit = card_seed(card), clips_per_class_in_test(card)
    chosen: list[dict[str, int]] = []
    for label in range(len(dataset.CLASS_NAMES)):
        found = 0
        for index in range(limit):
            clip = render(label, index, seed)
            if int(model(zoo.to_model_input(clip[None])).argmax(1)) == label:
                chosen.append({"label": label, "index": index})
                found += 1
                if found == per_class:
                    break
        if found < per_class:
            raise RuntimeError(
                f"{name}: only {found} correctly classified {dataset.CLASS_NAMES[label]} test clips"
            )
    return chosen


def write(name: str, per_class: int = PER_CLASS) -> list[dict[str, int]]:
    """Compute the attack set and store it in the model's card (the rest of the card is kept)."""
    entries = compute(name, per_class)
    path = zoo.card_path(name)
    card = json.loads(path.read_text())
    card["attack_set"] = entries
    text = json.dumps(card, indent=2)
    # one line per entry: 20 short lines instead of 80
    text = re.sub(r'\{\s*"label": (\d+),\s*"index": (\d+)\s*\}', r'{"label": \1, "index": \2}', text)
    path.write_text(text + "\n")
    return entries


def entries(name: str) -> list[dict[str, int]]:
    card = zoo.load_card(name)
    if card_dataset(card) != MOTION_DATASET:
        raise ValueError(f"{name}'s attack set belongs to {card_dataset(card)!r}, not this module")
    if "attack_set" not in card:
        raise KeyError(
            f"{name}'s card has no attack set: run python -m model_server.attack_set --model {name}"
        )
    return card["attack_set"]


def clips(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's attack set: (clips N×T×H×W×3 uint8, labels N int64), in card order."""
    card = zoo.load_card(name)
    items = entries(name)
    seed = card_seed(card)
    stack = np.stack([render(item["label"], item["index"], seed) for item in items])
    return stack, np.array([item["label"] for item in items], dtype=np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compute a model's attack set and write it into its card.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", choices=sorted(zoo.MODELS))
    group.add_argument("--all", action="store_true", help="every zoo model with weights")
    parser.add_argument("--per-class", type=int, default=PER_CLASS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    names = sorted(zoo.MODELS) if args.all else [args.model]
    for name in names:
        if not zoo.weights_path(name).exists() or not zoo.card_path(name).exists():
            print(f"{name}: no weights or card, skipped")
            continue
        dataset_name = card_dataset(zoo.load_card(name))
        if dataset_name != MOTION_DATASET:
            print(f"{name}: trained on {dataset_name!r}, its attack set is not this module's; left alone")
            continue
        chosen = write(name, args.per_class)
        print(f"{name}: {len(chosen)} clips, indices {[item['index'] for item in chosen]}")


if __name__ == "__main__":
    main()
