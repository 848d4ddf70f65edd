"""The benchmark table (scripts/bench_attacks.py `table`) computes what BENCHMARKS.md prints from the
grid's rows: FR over all runs, queries over successes and over all, the MAP-bound column."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_attacks.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_attacks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


def _row(success: bool, queries: int, map_: float, within: bool | None, **extra: object) -> dict:
    return {"model": "tsm", "goal": "targeted", "attack": "heuristic", "index": 0, "via": "inprocess",
            "success": success, "queries": queries, "map": map_, "linf": 40, "sparsity": 0.5,
            "frames_perturbed": 4, "cpu_seconds": 10.0, "within_map_bound": within, **extra}


def test_the_table_row_of_a_cell(tmp_path, capsys):
    results = tmp_path / "attacks.jsonl"
    rows = [_row(True, 100, 8.0, True), _row(True, 300, 12.0, False), _row(False, 30_000, 0.0, False)]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _bench().table(argparse.Namespace(results=results))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| tsm |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # clips, FR, within MAP bound, queries over successes (mean / median), over all, MAP, L∞
    assert cells[4:11] == ["3", "67%", "33%", "200 / 200", "10,133", "6.67", "40"]


def test_time_is_averaged_over_runs_with_freed_memory_kept_and_marks_older_ones():
    time_of = _bench()._time
    old = [_row(True, 100, 8.0, True, cpu_seconds=90.0), _row(True, 100, 8.0, True, cpu_seconds=110.0)]
    kept = [_row(True, 100, 8.0, True, cpu_seconds=30.0, memory_kept=True)]
    assert time_of(old + kept) == "30.0"  # a faster allocator is not averaged with the slower one
    assert time_of(old) == "100.0 ‡"
    walled = [{**r, "cpu_seconds": None, "seconds": 200.0} for r in old]
    assert time_of(walled) == "200.0 w"


def test_a_run_stands_by_its_queries_once_it_meets_its_criterion_and_else_by_how_far_it_got():
    standing = _bench()._standing
    within, above = _row(True, 900, 2.0, True), _row(True, 100, 5.0, False)
    assert standing(within) < standing(above)  # the MAP bound met beats fewer queries above it
    assert standing(above) < standing(_row(True, 100, 7.0, False))  # neither met: the lower MAP
    assert standing(above) < standing(_row(False, 15_000, 0.0, False))  # no adversarial start at all
    scored = {"within_map_bound": None, "map": 6.0}
    fooled = _row(True, 14_000, 6.0, None, **scored)
    ended_at_eps_20, ended_at_eps_30 = (_row(False, 30_000, 6.0, None, **scored, linf=e) for e in (20, 30))
    assert standing(fooled) < standing(ended_at_eps_20) < standing(ended_at_eps_30)


def test_the_claims_table_counts_each_clip_where_a_paper_s_comparison_held_tied_or_failed(tmp_path, capsys):
    def run(attack: str, index: int, queries: int, success: bool = True, linf: int = 12) -> dict:
        return {**_row(success, queries, 3.0, None, within_map_bound=None, linf=linf), "goal": "untargeted",
                "attack": attack, "index": index}
    rows = [run("vbad", 0, 500), run("pbad", 0, 900),   # held: fewer queries
            run("vbad", 1, 800), run("pbad", 1, 600),   # failed
            run("vbad", 2, 15_000, False), run("pbad", 2, 15_000, False),  # tied: both stayed at ε
            run("vbad", 3, 700)]  # no P-BAD run on clip 3: not counted
    results = tmp_path / "attacks.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _bench().table(argparse.Namespace(results=results))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| `vbad` < `pbad` |")
                and "| untargeted |" in x)
    assert [c.strip() for c in line.strip("|").split("|")][-3:] == ["1–1–1", "1–1–1", "1"]  # p of a 1–1 split


def test_the_sign_test_of_a_claim():
    sign_test = _bench().sign_test
    assert sign_test(0, 0) is None
    assert sign_test(10, 0) == sign_test(0, 10) == 2 / 2**10
    assert sign_test(4, 4) == 1.0
    assert abs(sign_test(8, 2) - 2 * (1 + 10 + 45) / 2**10) < 1e-12


def test_the_plot_draws_every_run_of_a_results_file(tmp_path):
    rows = [_row(True, 300, 2.0, True, goal="untargeted"), _row(False, 30_000, 12.0, False),
            {**_row(True, 900, 5.0, None, within_map_bound=None), "attack": "vbad", "goal": "untargeted"},
            {**_row(False, 30_000, 5.0, None, within_map_bound=None, linf=30),
             "attack": "astfocus:agents=none"}]
    results, figure = tmp_path / "attacks.jsonl", tmp_path / "grid.png"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _bench().plot(argparse.Namespace(results=results, figure=figure))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_counts_the_runs_of_each_clip_against_a_full_round():
    rows = [_row(True, 100, 8.0, True, index=0), _row(True, 100, 8.0, True, index=0),
            _row(True, 100, 8.0, True, index=2)]
    assert _bench().progress(rows, 2) == "3 runs; clip 0: 2 of 2 (complete); clip 2: 1 of 2"


def test_the_seed_spread_of_one_cell():
    runs = [{"attack": "nes_pgd", "clip": "2", "seed": seed, "success": queries < 15_000, "queries": queries}
            for seed, queries in [(0, 884), (1, 590), (2, 15_000)]]
    spread = _bench().seed_spread(runs)
    assert spread["seeds"] == 3 and spread["successes"] == 2
    assert (spread["queries_min"], spread["queries_median"], spread["queries_max"]) == (590, 884, 15_000)
    assert spread["queries_by_seed"] == {0: 884, 1: 590, 2: 15_000}


def test_runs_lists_each_run_of_one_clip_and_goal(tmp_path, capsys):
    rows = [_row(True, 100, 8.0, True), _row(True, 300, 12.0, False, index=2),
            _row(False, 30_000, 0.0, None, goal="untargeted")]
    results = tmp_path / "attacks.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _bench().runs(argparse.Namespace(results=results, clip=0, goal="targeted", model=None))
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| tsm |")]
    assert lines == ["| tsm | targeted | `heuristic` | yes | yes | 100 | 8.00 | 40 | 10 | — |"]


def test_stops_counts_why_the_hard_label_misses_ended(tmp_path, capsys):
    rows = [_row(True, 100, 8.0, True),  # met the bound: not counted
            _row(True, 30_000, 12.0, False),  # spent the budget
            _row(True, 3_000, 12.0, False, trace={"stopped": "step_size_exhausted"}),
            _row(True, 24_000, 12.0, False, trace={"stopped": "step_size_exhausted"}),
            _row(True, 900, 12.0, False, index=2)]  # before the trace was kept
    results = tmp_path / "attacks.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _bench().stops(argparse.Namespace(results=results))
    assert capsys.readouterr().out.splitlines() == [
        "hard-label runs that missed the MAP bound: 4; spent the whole budget: 1",
        "stopped: step_size_exhausted: 2, after 10%-80% of the budget, 1 under half",
        "no stop reason recorded: 1 (clips [2])"]


def test_cost_prints_what_a_score_based_run_that_spends_its_whole_budget_costs(tmp_path, capsys):
    results = tmp_path / "attacks.jsonl"
    spent = [_row(False, 30_000, 6.0, None, attack="vbad", memory_kept=True, cpu_seconds=s)
             for s in (200.0, 400.0)]
    rows = [*spent,
            _row(False, 30_000, 6.0, None, attack="vbad", cpu_seconds=900.0),  # older allocator: apart
            _row(True, 2_000, 6.0, None, attack="vbad", memory_kept=True, cpu_seconds=50.0),  # stopped early
            _row(False, 30_000, 6.0, None, attack="opt", memory_kept=True, cpu_seconds=20.0)]  # hard-label
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _bench().cost(argparse.Namespace(results=results))
    out = capsys.readouterr().out
    assert ("targeted score-based runs that spent the whole budget (freed memory kept): 2, 200-400 CPU s "
            "(mean 300)" in out)
    assert ("targeted score-based runs that spent the whole budget (glibc's defaults): 1, 900-900 CPU s "
            "(mean 900)" in out)
    assert "untargeted score-based" not in out


def test_clips_bolds_who_came_first_on_each_clip_and_tallies_each_family(tmp_path, capsys):
    def score(attack: str, index: int, success: bool, queries: int) -> dict:
        return _row(success, queries, 6.0, None, attack=attack, goal="untargeted", index=index, linf=12)

    rows = [score("vbad", 0, True, 100), score("pbad", 0, True, 200), score("srbad", 0, False, 15_000),
            *(score(a, 2, False, 15_000) for a in ("vbad", "pbad", "srbad")),  # all failed alike: no first
            score("vbad", 4, True, 50), score("srbad", 4, True, 50),  # P-BAD has not run: shown, not tallied
            _row(True, 300, 2.5, True, attack="rlsb"), _row(True, 4_000, 12.5, False, attack="opt"),
            _row(False, 42, 5.5, None, attack="keyframe")]
    results = tmp_path / "attacks.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _bench().clips(argparse.Namespace(results=results, via="inprocess", upto=None))
    lines = capsys.readouterr().out.splitlines()
    assert "| tsm | 0 | **100 · 6.00** | 200 · 6.00 | ✗ · 6.00 |" in lines
    assert "| tsm | 2 | ✗ · 6.00 | ✗ · 6.00 | ✗ · 6.00 |" in lines
    assert "| tsm | 4 | 50 · 6.00 |  | 50 · 6.00 |" in lines
    assert "| `vbad` | 2 | 1 | 1 | 0 | 1 |" in lines  # clips, met, first alone, tied, lowest MAP
    assert "| `srbad` | 2 | 0 | 0 | 0 | 0 |" in lines
    # Heuristic and Sign-OPT have not run: no first; key-frame transfer is shown beside, never ranked.
    assert "| tsm | 0 | 300 · 2.50 |  |  |  | ✗ 4 000 · 12.50 | ✗ not fooled |" in lines
    assert "| `keyframe` | 0 | 0 | — | — | — |" in lines
