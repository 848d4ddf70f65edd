"""Query fingerprints: did a code change alter what any attack sends to the oracle?

    .venv/bin/python scripts/query_fingerprints.py                  # print one line per case
    .venv/bin/python scripts/query_fingerprints.py --against HEAD   # diff with a commit; exit 1 if any

The benchmark grid runs for days and its rows are only comparable if the attacks' queries stay the same
under a refactor. Each case runs one attack, untargeted or targeted, on the unit tests' toy oracle
(tests/attacks/conftest.py; key-frame selection and RLSB on their tests' own toys) and prints the number of
queries, a digest of every clip sent in order, and the result. `--against REV` runs this script as it is in
REV (which must have it) in a temporary worktree and diffs the two outputs. Same machine only: torch and numpy
may round differently elsewhere.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.attacks.conftest import run_on_toy  # noqa: E402
from tests.attacks.test_keyframe_logic import run_toy as run_keyframe_on_toy  # noqa: E402
from tests.attacks.test_rlsb_logic import rlsb_with_untrained_policy  # noqa: E402
from tests.attacks.test_rlsb_logic import run_attack as run_rlsb_on_toy  # noqa: E402
from worker.attacks import build_attack  # noqa: E402

FAST = {"epsilon_decay": 0.1}  # targeted runs reach the goal ε within the toy budgets
FOCUS = {"patch_size": 8, "candidates_per_side": 3, "max_key_frames": 2}
# Eq. 7 on the CPU in seconds
ONE_SMALL_IMAGE_MODEL = {"image_models": ["efficientnet_lite0"], "image_size": 32}
CASES: dict[str, tuple[str, dict]] = {
    "vbad": ("vbad", {**FAST, **ONE_SMALL_IMAGE_MODEL}),
    "vbad_static": ("vbad", {**FAST, "tentative": "static"}),
    "pbad": ("pbad", FAST),
    "srbad": ("srbad", FAST),
    "srbad_default_decay": ("srbad", {}),
    "nes_pgd": ("nes_pgd", FAST),
    **{f"astfocus_{agents}": ("astfocus", {**FAST, **FOCUS, "agents": agents})
       for agents in ("both", "spatial", "temporal", "none")},
    "astfocus_random": ("astfocus", {**FAST, **FOCUS, "random_agents": True}),
    "opt": ("opt", {"initial_directions": 4, "map_bound": 0}),  # no early stop: the descent spends the budget
    "sign_opt": ("sign_opt", {"initial_directions": 4, "samples": 40, "map_bound": 0}),
    "heuristic": ("heuristic", {"initial_directions": 2, "map_bound": 0}),
    "heuristic_temporal_only": ("heuristic", {"initial_directions": 2, "map_bound": 0, "spatial": False}),
    # a surrogate that does not transfer (another seed than the oracle's): the NES finish does the work
    "keyframe_finish": ("keyframe_grad", {"surrogate_seed": 9, "max_iterations": 20, "finish_with": "nes_pgd",
                                          "epsilon": 12 / 255, "finish_population": 20}),
    # a seeded, untrained policy: the frame-deletion MDP, targeted fine-tuning (PPO) and Sign-OPT with the MAP
    # bound
    "rlsb": ("rlsb", {"finetune_iterations": 1, "finetune_timesteps": 4}),
    "rlsb_inline_pretraining": ("rlsb", {"pretrain_inline_queries": 120, "finetune_iterations": 0}),
}
OWN_TOY = {"keyframe_grad", "rlsb"}  # attacks replayed on their unit tests' toys, whose bias is fixed
# (target, toy oracle's bias): reachable goals, and ones the budget cannot reach
SETTINGS = [(None, 2.0), (None, 4.0), (1, 2.0), (1, 50.0)]
BUDGET = 1500


def fingerprint(name: str, params: dict, target: int | None, bias: float) -> str:
    clean = np.random.default_rng(3).integers(40, 216, size=(4, 16, 16, 3), dtype=np.uint8)
    if name == "keyframe_grad":  # needs the unit tests' white-box toy surrogate, whose bias is fixed
        oracle, tracker, _ = run_keyframe_on_toy(clean, BUDGET, target=target, **params)
    elif name == "rlsb":  # its toy's own clip: frame KEY decides the label
        oracle, tracker, _ = run_rlsb_on_toy(rlsb_attack(params, target), BUDGET, target=target)
    else:
        oracle, tracker = run_on_toy(build_attack(name, params), clean, BUDGET, target=target, bias=bias)
    sent = hashlib.sha256("\n".join(map(str, oracle.log)).encode()).hexdigest()[:16]
    best = tracker.best
    result = hashlib.sha256(best.clip.tobytes()).hexdigest()[:12]
    return (f"queries={oracle.used} sent={sent} result={result} distance={best.distance} "
            f"success={best.success}")


def rlsb_attack(params: dict, target: int | None):
    attack = rlsb_with_untrained_policy("untargeted" if target is None else "targeted", **params)
    if params.get("pretrain_inline_queries"):
        attack.policy = None  # no stored policy: the job pre-trains one with its own queries
    return attack


def print_fingerprints() -> None:
    runs = [(case, target, bias) for case in CASES for target, bias in SETTINGS
            if bias == 2.0 or CASES[case][0] not in OWN_TOY]
    for case, target, bias in tqdm(runs, desc="cases", file=sys.stderr):
        name, params = CASES[case]
        print(f"{case} target={target} bias={bias} {fingerprint(name, params, target, bias)}", flush=True)


def output_at(tree: Path) -> list[str]:
    """This script's output as `tree`'s copy of it prints it."""
    done = subprocess.run([sys.executable, str(tree / "scripts/query_fingerprints.py")], cwd=tree,
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def compare_with(revision: str) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        baseline = Path(scratch) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline), revision], cwd=ROOT,
                       check=True)
        try:
            before = output_at(baseline)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=True)
    after = output_at(ROOT)
    diff = list(difflib.unified_diff(before, after, revision, "working tree", lineterm=""))
    print("\n".join(diff) if diff else f"identical: {len(after)} cases send the same queries as {revision}")
    return 1 if diff else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="REV",
                        help="git revision to compare with (it must have this script)")
    args = parser.parse_args()
    if args.against:
        return compare_with(args.against)
    print_fingerprints()
    return 0


if __name__ == "__main__":
    sys.exit(main())
