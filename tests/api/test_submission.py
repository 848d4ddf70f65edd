"""The form checks of POST /jobs, without HTTP."""
from __future__ import annotations

import json

import pytest
from fastapi import HTTPException

from api import submission
from api.forms import human_bytes
from core.settings import Settings
from worker.attacks import ATTACKS


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, max_queries_cap=1000, default_model="mini")


def _status(call) -> tuple[int, str]:
    with pytest.raises(HTTPException) as info:
        call()
    return info.value.status_code, info.value.detail


def test_unknown_attack_lists_the_valid_ones() -> None:
    status, detail = _status(lambda: submission.resolve_attack("fgsm"))
    assert status == 422 and "fgsm" in detail and all(name in detail for name in ATTACKS)


def test_params_are_validated_and_defaults_filled() -> None:
    attack = ATTACKS["nes_pgd"]
    params = submission.parse_params(attack, '{"epsilon": 0.03}')
    assert params["epsilon"] == 0.03
    assert params == attack.Params(epsilon=0.03).model_dump(mode="json")
    assert submission.parse_params(attack, "") == attack.Params().model_dump(mode="json")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{bad", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"epsilon": 7}', "params.epsilon"),
        ('{"epsilonn": 0.1}', "params.epsilonn: unknown field"),
    ],
)
def test_bad_params_say_what_to_fix(raw: str, expected: str) -> None:
    status, detail = _status(lambda: submission.parse_params(ATTACKS["nes_pgd"], raw))
    assert status == 422 and expected in detail
    if "params." in expected:
        assert "epsilon" in detail.split("valid parameters")[1]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, "required"), ("", "required"), ("ten", "integer"), ("0", "between"), ("-5", "between"),
     ("1001", "between"), ("1", "at least 2")],
)
def test_max_queries_bounds(raw: str | None, expected: str) -> None:
    status, detail = _status(lambda: submission.parse_max_queries(raw, 1000))
    assert status == 422 and expected in detail


def test_max_queries_accepts_the_range_ends() -> None:
    assert submission.parse_max_queries(" 2 ", 1000) == 2
    assert submission.parse_max_queries("1000", 1000) == 1000


def test_goal_and_target_label_go_together() -> None:
    assert submission.parse_goal(None, None) == ("untargeted", None)
    assert submission.parse_goal("targeted", "3") == ("targeted", 3)
    for goal, target, expected in [
        ("targeted", None, "needs target_label"),
        ("untargeted", "2", "only used with goal=targeted"),
        ("sideways", None, "goal must be one of"),
        ("targeted", "x", "integer"),
    ]:
        status, detail = _status(lambda goal=goal, target=target: submission.parse_goal(goal, target))
        assert status == 422 and expected in detail


def test_validate_fields_runs_checks_in_the_documented_order(settings: Settings) -> None:
    # Every field is wrong: the attack is reported first, then params, then the budget.
    fields = {"attack": "nope", "params": "{", "max_queries": "0"}
    assert "unknown attack" in _status(lambda: submission.validate_fields(fields, settings))[1]
    fields["attack"] = "nes_pgd"
    assert "params" in _status(lambda: submission.validate_fields(fields, settings))[1]
    fields["params"] = "{}"
    assert "max_queries" in _status(lambda: submission.validate_fields(fields, settings))[1]
    fields["max_queries"] = "50"
    result = submission.validate_fields(fields, settings)
    assert (result.attack, result.model, result.goal) == ("nes_pgd", "mini", "untargeted")
    assert result.max_queries == 50
    assert json.dumps(result.params)  # stored as JSON on the job


def test_unknown_form_fields_are_refused(settings: Settings) -> None:
    status, detail = _status(lambda: submission.validate_fields({"max_query": "5"}, settings))
    assert status == 422 and "max_query" in detail and "max_queries" in detail


def test_partial_checks_only_judge_fields_that_arrived(settings: Settings) -> None:
    submission.validate_partial_fields({}, settings)  # nothing known yet: no error
    submission.validate_partial_fields({"params": "{not json"}, settings)  # attack unknown yet
    with pytest.raises(HTTPException):
        submission.validate_partial_fields({"attack": "nope"}, settings)


def test_target_checks(settings: Settings) -> None:
    from tests.api.conftest import FakeOracle

    spec = FakeOracle().spec
    submission.check_target_range(None, spec)
    submission.check_target_range(3, spec)
    assert "[0, 4)" in _status(lambda: submission.check_target_range(4, spec))[1]
    assert "[0, 4)" in _status(lambda: submission.check_target_range(-1, spec))[1]
    answer = {"label": 2, "label_name": "jump", "probability": 0.8}
    submission.check_target_differs(1, answer)
    assert "already predicts label 2" in _status(lambda: submission.check_target_differs(2, answer))[1]


def test_human_bytes() -> None:
    assert human_bytes(10) == "10 bytes"
    assert human_bytes(64 * 1024 * 1024) == "64 MiB"
    assert human_bytes(1536) == "1.5 KiB"


@pytest.mark.parametrize("name", ["../models", "mini/1.0", "a b", "", "x?customized=true", "m" * 129])
def test_model_names_cannot_walk_torchserve_urls(name: str) -> None:
    status, detail = _status(lambda: submission.parse_model(name))
    assert status == 422 and "model name" in detail


def test_model_names_that_torchserve_uses_pass() -> None:
    assert submission.parse_model(" mini_c3d ") == "mini_c3d"
    assert submission.parse_model("efficientnet-lite0.v2") == "efficientnet-lite0.v2"
