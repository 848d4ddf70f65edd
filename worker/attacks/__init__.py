"""The attack registry: one module per paper or baseline; `ATTACKS[name]` is the attack's class."""
from __future__ import annotations

from worker.attacks.astfocus import AstFocus
from worker.attacks.base import Attack, AttackParams
from worker.attacks.heuristic import Heuristic
from worker.attacks.keyframe import KeyframeGrad
from worker.attacks.nes_pgd import NesPgd
from worker.attacks.opt import Opt
from worker.attacks.rlsb import Rlsb
from worker.attacks.sign_opt import SignOpt
from worker.attacks.vbad import Pbad, Srbad, Vbad

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (NesPgd, Vbad, Pbad, Srbad, AstFocus, Opt, SignOpt, Heuristic, KeyframeGrad, Rlsb)
}


def build_attack(name: str, raw_params: dict) -> Attack:
    """Validate parameters against the attack's schema and build it (pydantic errors propagate)."""
    cls = ATTACKS[name]
    return cls(cls.Params.model_validate(raw_params))


__all__ = ["ATTACKS", "Attack", "AttackParams", "build_attack"]
