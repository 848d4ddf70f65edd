"""Train a zoo model on the motion dataset and write its fp16 weights and model card.

    python -m model_server.train --model mini_c3d

Deterministic on a given machine: fixed seeds, a fixed thread count and per-clip seeded data. The
model kept is the epoch with the best VAL accuracy; TEST accuracy is measured once, at the end, on
the fp16 weights exactly as they are served.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.memory import keep_freed_memory
from model_server import dataset, zoo

# Label permutations under flips. A mirrored or time-reversed clip is still a valid clip, but some
# motions change class (a left move mirrored is a right move) and the label must follow.
_L, _R, _U, _D, _ZI, _ZO, _CW, _CCW, _OR, _SH = range(10)
_HFLIP = [_R, _L, _U, _D, _ZI, _ZO, _CCW, _CW, _OR, _SH]
_VFLIP = [_L, _R, _D, _U, _ZI, _ZO, _CCW, _CW, _OR, _SH]
_TFLIP = [_R, _L, _D, _U, _ZO, _ZI, _CCW, _CW, _OR, _SH]
# Dimensions of the N×3×T×H×W model input that each flip reverses.
_FLIPS = ((_HFLIP, 4), (_VFLIP, 3), (_TFLIP, 2))
assert dataset.CLASS_NAMES[_ZI] == "zoom_in" and dataset.CLASS_NAMES[_SH] == "shake"


def augment(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal, vertical and temporal flips, each on half of the batch, labels remapped."""
    for table, dim in _FLIPS:
        chosen = torch.rand(len(y), generator=generator) < 0.5
        x[chosen] = x[chosen].flip(dim)
        y[chosen] = torch.tensor(table)[y[chosen]]
    return x, y


@torch.inference_mode()
def accuracy(model: nn.Module, clips: np.ndarray, labels: np.ndarray, chunk: int = 64) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(clips), chunk):
        logits = model(zoo.to_model_input(clips[start : start + chunk]))
        correct += int((logits.argmax(1).numpy() == labels[start : start + chunk]).sum())
    return correct / len(clips)


def train_epoch(
    model: nn.Module,
    clips: np.ndarray,
    labels: np.ndarray,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch_size: int,
    generator: torch.Generator,
    description: str,
) -> float:
    model.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    order = torch.randperm(len(clips), generator=generator).numpy()
    total, seen = 0.0, 0
    bar = tqdm(range(0, len(order), batch_size), desc=description, leave=False)
    for start in bar:
        idx = np.sort(order[start : start + batch_size])  # sorted: faster gather from the big array
        x, y = augment(zoo.to_model_input(clips[idx]), torch.from_numpy(labels[idx]), generator)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total, seen = total + loss.item() * len(idx), seen + len(idx)
        bar.set_postfix(loss=f"{total / seen:.3f}")
    return total / seen


def save_fp16(model: nn.Module, path: Path) -> str:
    """Write the state dict with floating tensors in fp16 (half the bytes); return its sha256."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded_command(argv: list[str]) -> str:
    """The command for the card, without `--out DIR` (where files go changes no weight)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return shlex.join(["python", "-m", "model_server.train", *kept])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a zoo model on the motion dataset.")
    parser.add_argument("--model", default="mini_c3d", choices=sorted(zoo.MODELS))
    parser.add_argument("--epochs", type=int, help="default: the model's TrainRecipe in zoo.py")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, help="default: the model's TrainRecipe")
    parser.add_argument("--lr", type=float, help="default: the model's TrainRecipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=zoo.WEIGHTS_DIR)
    args = parser.parse_args(argv)
    recipe = zoo.entry(args.model).recipe
    args.epochs = args.epochs or recipe.epochs
    args.batch_size = args.batch_size or recipe.batch_size
    args.lr = args.lr or recipe.lr
    command = recorded_command(sys.argv[1:] if argv is None else argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.time()

    print("generating the dataset …", flush=True)
    train_x, train_y = dataset.generate_split("train", args.train_per_class, args.seed)
    val_x, val_y = dataset.generate_split("val", args.val_per_class, args.seed)
    test_x, test_y = dataset.generate_split("test", args.test_per_class, args.seed)
    elapsed = time.time() - started
    print(f"  {len(train_x)} train / {len(val_x)} val / {len(test_x)} test clips in {elapsed:.0f}s")

    model = zoo.build(args.model)
    steps = args.epochs * -(-len(train_x) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(args.seed)

    best_val, best_state = -1.0, None
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(
            model,
            train_x,
            train_y,
            optimizer,
            scheduler,
            args.batch_size,
            generator,
            f"epoch {epoch}/{args.epochs}",
        )
        val_acc = accuracy(model, val_x, val_y)
        elapsed = time.time() - started
        print(
            f"epoch {epoch}/{args.epochs}  loss {loss:.4f}  val {val_acc:.2%}  ({elapsed:.0f}s)", flush=True
        )
        if val_acc > best_val:
            best_val, best_state = val_acc, copy.deepcopy(model.state_dict())

    model.load_state_dict(best_state)
    weights = zoo.weights_path(args.model, args.out)
    sha256 = save_fp16(model, weights)
    served = zoo.load_trained(args.model, args.out)  # measure what the server will load
    test_acc = accuracy(served, test_x, test_y)
    print(f"TEST ACCURACY {test_acc:.2%} on {len(test_x)} clips from unseen photographs")

    spec = zoo.entry(args.model).input
    card = {
        "model": args.model,
        "dataset": "motion",
        "seed": args.seed,
        "labels": dataset.CLASS_NAMES,
        "input": {"frames": spec.frames, "height": spec.height, "width": spec.width,
                  "channels": 3, "dtype": "uint8", "layout": "NTHWC"},
        "accuracy": round(test_acc, 4),
        "val_accuracy": round(best_val, 4),
        "test_clips": len(test_x),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_file": weights.name,
        "weights_sha256": sha256,
        "weights_dtype": "float16",
        "train_command": command,
        "train_seconds": round(time.time() - started),
        "torch": torch.__version__,
        "photos": {split: dataset.split_photos(split) for split in dataset.SPLITS},
    }  # fmt: skip
    zoo.card_path(args.model, args.out).write_text(json.dumps(card, indent=2) + "\n")
    print(
        f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {zoo.card_path(args.model, args.out)}"
    )


if __name__ == "__main__":
    main()
