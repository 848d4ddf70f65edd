"""`vaas`: the VAAS command-line client. It speaks only the public HTTP API (see client/http.py).

Configuration: `--url` (env VAAS_URL, default http://127.0.0.1:8000) and `--key` (env VAAS_API_KEY).
Exit codes: 0 done, 1 the API refused or could not be reached, 2 usage, 3 a waited-for job or campaign
ended without success, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from client.http import DEFAULT_URL, VaasClient, VaasError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_SUCCEEDED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

JOB_STATUSES = ("queued", "running", "succeeded", "budget_exhausted", "failed", "cancelled", "error")
ACTIVE = frozenset({"queued", "running", "pending", "created", "cancelling"})
CAMPAIGN_NOT_OK = frozenset({"cancelled", "error", "failed"})
# Polling survives this many consecutive transient failures (no answer, 5xx) before giving up.
POLL_RETRIES = 5
DASH = "-"


class UsageError(Exception):
    """A command line the API should never see (bad JSON in --params, contradictory options)."""


class WaitTimeout(Exception):
    def __init__(self, what: str, last: Mapping[str, Any], timeout: float) -> None:
        status = last.get("status", "?")
        super().__init__(f"{what} is still {status} after {timeout:g} s; wait again or cancel it")
        self.last = last


# ==================================================================================== output
def out(text: str = "") -> None:
    print(text, file=sys.stdout)


def note(text: str) -> None:
    print(text, file=sys.stderr)


def print_json(value: Any) -> None:
    out(json.dumps(value, indent=2, ensure_ascii=False))


def terminal_width() -> int:
    return max(60, shutil.get_terminal_size((120, 24)).columns)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[int] = (),
                 width: int | None = None) -> str:
    """A plain aligned table; the last column is cut to fit `width` (when given)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    right = set(right)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if width is not None and len(headers) > 1:
        room = width - sum(widths[:-1]) - 2 * (len(headers) - 1)
        if room >= 12 and widths[-1] > room:
            widths[-1] = room
            for row in cells:
                if len(row[-1]) > room:
                    row[-1] = row[-1][: room - 1] + "…"
    lines = []
    for row in cells:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def kv_block(pairs: Iterable[tuple[str, Any]]) -> str:
    pairs = [(k, v) for k, v in pairs if v not in (None, "")]
    pad = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(pad)}  {v}" for k, v in pairs)


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def percent(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return DASH if value is None else str(value)
    return f"{100 * value:.1f}%" if 0 <= value <= 1 else f"{value:.1f}%"


def when(stamp: str | None) -> str | None:
    """`2025-01-02T03:04:05.678+00:00` → `2025-01-02 03:04:05` (UTC, as the API stores it)."""
    return stamp.replace("T", " ")[:19] if stamp else None


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def short_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _TextSink:
    """A binary write target over a text stream (stdout without a .buffer, e.g. some test captures)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.stream.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


def stdout_binary() -> IO[bytes]:
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    return buffer if buffer is not None else _TextSink(sys.stdout)  # type: ignore[return-value]


# ==================================================================================== parsing helpers
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def json_object(text: str, what: str = "--params") -> dict[str, Any]:
    """A JSON object given inline or as `@file.json`."""
    source = text.strip()
    if source.startswith("@"):
        path = Path(source[1:]).expanduser()
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{what}: cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        value = json.loads(source or "{}")
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} is not valid JSON ({exc.msg} at character {exc.pos}); "
            'give an object such as \'{"epsilon": 0.05}\' or @params.json'
        ) from exc
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def attack_spec(text: str) -> dict[str, Any]:
    """`NAME` or `NAME:{json}` or `NAME:@file.json` → {"name": NAME, "params": {...}}."""
    name, sep, params = text.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"--attack {text!r}: missing the attack name (NAME or NAME:JSON_PARAMS)")
    return {"name": name, "params": json_object(params, f"the params of --attack {name}") if sep else {}}


def target_rule(text: str) -> dict[str, Any]:
    """`next` | `random[:SEED]` | `fixed:LABEL` | `per_clip:L1,L2,…` → the campaign's target_rule object."""
    kind, sep, value = text.strip().partition(":")
    try:
        if kind == "next" and not sep:
            return {"kind": "next"}
        if kind == "random":
            return {"kind": "random", "seed": int(value)} if sep else {"kind": "random"}
        if kind == "fixed" and sep:
            return {"kind": "fixed", "label": int(value)}
        if kind == "per_clip" and sep:
            return {"kind": "per_clip", "labels": [int(v) for v in value.split(",")]}
    except ValueError:
        pass
    raise UsageError("--target-rule must be next, random[:SEED], fixed:LABEL or per_clip:L1,L2,… "
                     f"(label indexes), got {text!r}")


def resolve_goal(goal: str | None, target: int | None) -> tuple[str, int | None]:
    if goal is None:
        goal = "targeted" if target is not None else "untargeted"
    if goal == "targeted" and target is None:
        raise UsageError("--goal targeted needs --target LABEL (a label index; see `vaas models MODEL`)")
    if goal == "untargeted" and target is not None:
        raise UsageError("--target is only used with --goal targeted")
    return goal, target


# ==================================================================================== waiting
def _tqdm_disable(args: argparse.Namespace) -> bool | None:
    """tqdm's `disable`: None lets tqdm decide (a bar only on a terminal)."""
    flag = getattr(args, "progress", None)
    return None if flag is None else not flag


def poll(fetch: Callable[[], dict[str, Any]], *, interval: float, deadline: float | None,
         describe: str, on_update: Callable[[dict[str, Any]], None],
         done: Callable[[dict[str, Any]], bool], timeout: float | None) -> dict[str, Any]:
    """Call `fetch` until `done`; transient failures (no answer, 5xx) are retried a few times."""
    failures = 0
    while True:
        try:
            state = fetch()
            failures = 0
        except VaasError as exc:
            transient = exc.status is None or exc.status >= 500
            failures += 1
            if not transient or failures > POLL_RETRIES:
                raise
            note(f"vaas: polling {describe} failed ({exc.detail}); retrying")
            time.sleep(max(interval, 1.0) * failures)
            continue
        on_update(state)
        if done(state):
            return state
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(describe, state, timeout or 0.0)
        time.sleep(interval)


def wait_job(vaas: VaasClient, job_id: str, args: argparse.Namespace,
             first: dict[str, Any] | None = None) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job ends, with a bar of queries_used / max_queries."""
    from tqdm import tqdm

    timeout = getattr(args, "timeout", None)
    deadline = time.monotonic() + timeout if timeout else None
    pending = [first] if first is not None else []

    def fetch() -> dict[str, Any]:
        return pending.pop() if pending else vaas.get_job(job_id)

    bar = tqdm(total=None, desc=f"job {job_id[:8]}", unit="q", file=sys.stderr, dynamic_ncols=True,
               disable=_tqdm_disable(args), leave=True)

    def update(job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        total = progress.get("max_queries")
        if total and bar.total != total:
            bar.total = total
        bar.n = progress.get("queries_used", 0)
        bar.set_postfix(status=job.get("status"), best_score=num(progress.get("best_score")),
                        perturbation=num(progress.get("best_distance")), refresh=False)
        bar.refresh()

    try:
        return poll(fetch, interval=args.interval, deadline=deadline, describe=f"job {job_id}",
                    on_update=update, done=lambda j: j.get("status") not in ACTIVE, timeout=timeout)
    finally:
        bar.close()


def wait_campaign(vaas: VaasClient, campaign_id: str, args: argparse.Namespace,
                  first: dict[str, Any] | None = None) -> dict[str, Any]:
    """Poll GET /campaigns/{id} until it ends, with a bar of finished / jobs."""
    from tqdm import tqdm

    timeout = getattr(args, "timeout", None)
    deadline = time.monotonic() + timeout if timeout else None
    pending = [first] if first is not None else []

    def fetch() -> dict[str, Any]:
        return pending.pop() if pending else vaas.get_campaign(campaign_id)

    bar = tqdm(total=None, desc=f"campaign {campaign_id[:8]}", unit="job", file=sys.stderr,
               dynamic_ncols=True, disable=_tqdm_disable(args), leave=True)

    def update(campaign: dict[str, Any]) -> None:
        progress = campaign.get("progress") or {}
        total = progress.get("jobs")
        if total and bar.total != total:
            bar.total = total
        bar.n = progress.get("finished", 0)
        bar.set_postfix(status=campaign.get("status"), succeeded=progress.get("succeeded"),
                        queries=progress.get("queries_used"), refresh=False)
        bar.refresh()

    try:
        return poll(fetch, interval=args.interval, deadline=deadline, describe=f"campaign {campaign_id}",
                    on_update=update, done=lambda c: c.get("status") not in ACTIVE, timeout=timeout)
    finally:
        bar.close()


def job_exit(job: Mapping[str, Any]) -> int:
    return EXIT_OK if job.get("status") == "succeeded" else EXIT_NOT_SUCCEEDED


def campaign_exit(campaign: Mapping[str, Any]) -> int:
    return EXIT_NOT_SUCCEEDED if campaign.get("status") in CAMPAIGN_NOT_OK else EXIT_OK


# ==================================================================================== job views
def label_text(label: Any, name: Any = None, probability: Any = None) -> str | None:
    if label is None:
        return None
    text = f"{label}" + (f" ({name})" if name else "")
    return text + (f", p={num(probability)}" if probability is not None else "")


def metrics_summary(metrics: Mapping[str, Any] | None) -> str | None:
    if not metrics:
        return None
    parts = []
    if "success" in metrics:
        if not metrics["success"] and metrics.get("label_met"):
            parts.append("goal not met (label reached, perturbation above the attack's bound)")
        else:
            parts.append("goal met" if metrics["success"] else "goal not met")
    final = label_text(metrics.get("final_label"), metrics.get("final_label_name"),
                       metrics.get("final_probability"))
    if final:
        parts.append(f"final label {final}")
    for key, title, digits in (("map", "MAP", 3), ("linf", "L∞", 3), ("sparsity", "sparsity", 3),
                               ("frames_perturbed", "frames perturbed", 0), ("queries", "queries", 0)):
        if metrics.get(key) is not None:
            parts.append(f"{title} {num(metrics[key], digits)}")
    if metrics.get("wall_time_s") is not None:
        parts.append(f"{num(metrics['wall_time_s'], 1)} s")
    return " · ".join(parts) or None


def report_summary(report: Mapping[str, Any] | None) -> str | None:
    """A pre-training report's scalars, and the last value (and length) of each series."""
    if not report:
        return None
    parts = []
    for key, value in report.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            parts.append(f"{key} {num(value)}")
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            parts.append(f"{key} {num(value[-1])} (last of {len(value)})")
    return " · ".join(parts) or None


def _label_line(job: Mapping[str, Any]) -> str | None:
    text = label_text(job.get("source_label"), job.get("source_label_name"), job.get("source_probability"))
    return f"label {text}" if text else None


def job_view(job: Mapping[str, Any]) -> str:
    progress = job.get("progress") or {}
    goal = job.get("goal") or "untargeted"
    if goal == "targeted":
        goal = f"targeted → label {job.get('target_label')}"
    used, budget = progress.get("queries_used"), progress.get("max_queries")
    line = f"{used}/{budget} queries"
    if progress.get("fraction") is not None:
        line += f" ({100 * progress['fraction']:.1f}%)"
    if progress.get("best_score") is not None:
        line += f", best score {num(progress['best_score'])}"
    if progress.get("best_distance") is not None:
        line += f", perturbation {num(progress['best_distance'])}"
    links = job.get("links") or {}
    files = [fmt for fmt in ("npy", "mkv") if links.get(f"adversarial_{fmt}")]
    times = " · ".join(f"{k} {when(job.get(f'{k}_at'))}" for k in ("created", "started", "finished")
                       if job.get(f"{k}_at"))
    what = f"{job.get('attack')} on {job.get('model')}, {goal}"
    if job.get("kind") == "pretrain":
        what = f"RLSB policy pre-training on {job.get('model')}, {job.get('goal')}"
    metrics = job.get("metrics")
    result = report_summary(metrics) if job.get("kind") == "pretrain" else metrics_summary(metrics)
    return kv_block([
        ("job", job.get("id")),
        ("status", job.get("status")),
        ("attack", what),
        ("clean", _label_line(job)),
        ("progress", line),
        ("result", result),
        ("error", job.get("error")),
        ("time", times),
        ("files", f"{', '.join(files)}  (vaas download {job.get('id')} --format npy|mkv)" if files else None),
    ])


def policy_view(policy: Mapping[str, Any]) -> str:
    progress = policy.get("progress") or {}
    links = policy.get("links") or {}
    times = " · ".join(f"{k} {when(policy.get(f'{k}_at'))}" for k in ("created", "started", "finished")
                       if policy.get(f"{k}_at"))
    weights = f"ready (vaas policy download {policy.get('id')})" if links.get("weights") else "not yet"
    return kv_block([
        ("policy", policy.get("id")),
        ("status", policy.get("status")),
        ("model", f"{policy.get('model')}, {policy.get('goal')}"),
        ("params", short_json(policy.get("params") or {})),
        ("progress", f"{progress.get('queries_used')}/{progress.get('max_queries')} queries"),
        ("report", report_summary(policy.get("report"))),
        ("error", policy.get("error")),
        ("time", times),
        ("weights", weights),
        ("queries", f"vaas queries {policy.get('id')}"),
    ])


def items_of(page: Any) -> tuple[list[dict[str, Any]], int | None]:
    if isinstance(page, list):
        return page, len(page)
    return list(page.get("items") or []), page.get("total")


def page_footer(shown: int, total: int | None, offset: int = 0) -> None:
    if total is not None and total > shown:
        note(f"showing {offset + 1}–{offset + shown} of {total}; page with --limit/--offset")


# ==================================================================================== commands
def cmd_health(vaas: VaasClient, args: argparse.Namespace) -> int:
    health = vaas.health()
    if "components" not in health:
        raise VaasError(str(health.get("detail", health)))
    if args.json:
        print_json(health)
    else:
        out(f"{health.get('status')} at {vaas.base_url}")
        rows = [(name, "ok" if c.get("ok") else "DOWN", c.get("detail"))
                for name, c in health["components"].items()]
        out(render_table(("COMPONENT", "STATE", "DETAIL"), rows, width=terminal_width()))
    return EXIT_OK if health.get("status") == "ok" else EXIT_ERROR


def cmd_attacks(vaas: VaasClient, args: argparse.Namespace) -> int:
    attacks = vaas.attacks()
    if args.name:
        chosen = next((a for a in attacks if a.get("name") == args.name), None)
        if chosen is None:
            raise VaasError(f"no attack {args.name!r}; the attacks are "
                            f"{', '.join(a['name'] for a in attacks)}")
        if args.json:
            print_json(chosen)
            return EXIT_OK
        out(f"{chosen['name']}: {chosen.get('description', '')}")
        properties = (chosen.get("parameters") or {}).get("properties") or {}
        if properties:
            out("")
            rows = [(name, schema_type(spec),
                     short_json(spec["default"]) if "default" in spec else "(required)",
                     spec.get("description", "")) for name, spec in properties.items()]
            out(render_table(("PARAMETER", "TYPE", "DEFAULT", "DESCRIPTION"), rows, width=terminal_width()))
        return EXIT_OK
    if args.json:
        print_json(attacks)
        return EXIT_OK
    rows = [(a.get("name"), first_sentence(a.get("description", ""))) for a in attacks]
    out(render_table(("ATTACK", "DESCRIPTION"), rows, width=terminal_width()))
    note("parameters of one attack: vaas attacks NAME")
    return EXIT_OK


def schema_type(spec: Mapping[str, Any]) -> str:
    if "enum" in spec:
        return "|".join(str(v) for v in spec["enum"])
    if "type" in spec:
        return str(spec["type"])
    options = spec.get("anyOf") or spec.get("oneOf") or []
    kinds = [schema_type(option) for option in options if isinstance(option, Mapping)]
    if kinds:
        return "|".join(kinds)
    if "const" in spec:
        return short_json(spec["const"])
    return "any"


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    cut = text.find(". ")
    return text[: cut + 1] if cut > 0 else text


def input_spec(model: Mapping[str, Any]) -> str:
    spec = model.get("input") or {}
    dims = "×".join(str(spec.get(k, "?")) for k in ("frames", "height", "width", "channels"))
    return f"{dims} {spec.get('dtype', 'uint8')} {spec.get('layout', 'THWC')}"


def cmd_models(vaas: VaasClient, args: argparse.Namespace) -> int:
    models = vaas.models()
    if args.name:
        chosen = next((m for m in models if m.get("name") == args.name), None)
        if chosen is None:
            served = ", ".join(m["name"] for m in models) or "none"
            raise VaasError(f"no model {args.name!r}; the served models are {served}")
        if args.json:
            print_json(chosen)
            return EXIT_OK
        out(kv_block([("model", chosen["name"]), ("input", input_spec(chosen)),
                      ("max clips", chosen.get("max_clips")), ("labels", len(chosen.get("labels") or []))]))
        out("")
        out(render_table(("LABEL", "NAME"), enumerate(chosen.get("labels") or []), right=(0,)))
        return EXIT_OK
    if args.json:
        print_json(models)
        return EXIT_OK
    rows = []
    for m in models:
        labels = m.get("labels") or []
        shown = ", ".join(labels[:6]) + (", …" if len(labels) > 6 else "")
        rows.append((m.get("name"), input_spec(m), m.get("max_clips"), len(labels), shown))
    out(render_table(("MODEL", "INPUT", "MAX_CLIPS", "LABELS", "NAMES"), rows, right=(2, 3),
                     width=terminal_width()))
    note("all labels of one model (target indexes): vaas models NAME")
    return EXIT_OK


def cmd_submit(vaas: VaasClient, args: argparse.Namespace) -> int:
    goal, target = resolve_goal(args.goal, args.target)
    params = json_object(args.params) if args.params is not None else None
    video = Path(args.video).expanduser()
    if not video.is_file():
        raise VaasError(f"no such video file: {str(video)!r}")
    job = vaas.submit_job(video, attack=args.attack, model=args.model, goal=goal, target_label=target,
                          max_queries=args.max_queries, params=params)
    if args.json and not args.wait:
        print_json(job)
        return EXIT_OK
    if not args.json:
        out(job["id"])
        clean = label_text(job.get("source_label"), job.get("source_label_name"),
                           job.get("source_probability"))
        note(f"queued: {job.get('attack')} on {job.get('model')} ({job.get('goal')}), clean label {clean}, "
             f"budget {(job.get('progress') or {}).get('max_queries')} queries")
    if not args.wait:
        note(f"follow it: vaas wait {job['id']}")
        return EXIT_OK
    return finish_job_wait(vaas, job["id"], args, first=job)


def finish_job_wait(vaas: VaasClient, job_id: str, args: argparse.Namespace,
                    first: dict[str, Any] | None = None) -> int:
    try:
        job = wait_job(vaas, job_id, args, first=first)
    except WaitTimeout as exc:
        if args.json:
            print_json(exc.last)
        raise VaasError(str(exc)) from exc
    if args.json:
        print_json(job)
    else:
        out(job_view(job))
    return job_exit(job)


def cmd_status(vaas: VaasClient, args: argparse.Namespace) -> int:
    job = vaas.get_job(args.job)
    if args.json:
        print_json(job)
    else:
        out(job_view(job))
    return EXIT_OK


def cmd_wait(vaas: VaasClient, args: argparse.Namespace) -> int:
    return finish_job_wait(vaas, args.job, args)


def cmd_cancel(vaas: VaasClient, args: argparse.Namespace) -> int:
    job = vaas.cancel_job(args.job)
    if args.json:
        print_json(job)
    elif job.get("status") == "cancelled":
        out(f"job {job['id']} cancelled")
    else:
        out(f"job {job['id']} is {job.get('status')}: it stops at its next oracle round "
            f"(vaas wait {job['id']})")
    return EXIT_OK


def save(fetch: Callable[[Any], int], output: str | None, default_name: str, args: argparse.Namespace) -> int:
    """Stream a download to -o PATH (a folder gets the default name inside), the default name, or stdout."""
    if output == "-":
        fetch(stdout_binary())
        return EXIT_OK
    path = Path(output).expanduser() if output else Path(default_name)
    if path.is_dir():
        path = path / default_name
    size = fetch(path)
    if args.json:
        print_json({"path": str(path), "bytes": size})
    else:
        out(f"saved {path} ({human_bytes(size)})")
    return EXIT_OK


def cmd_download(vaas: VaasClient, args: argparse.Namespace) -> int:
    return save(lambda dest: vaas.download_adversarial(args.job, dest, args.format), args.output,
                f"{args.job}-adversarial.{args.format}", args)


def cmd_queries(vaas: VaasClient, args: argparse.Namespace) -> int:
    fmt = "json" if args.json and args.format == "table" else args.format
    if fmt in ("csv", "jsonl"):
        if args.output is None or args.output == "-":
            vaas.export_queries(args.job, stdout_binary(), fmt)
            return EXIT_OK
        return save(lambda dest: vaas.export_queries(args.job, dest, fmt), args.output,
                    f"{args.job}-queries.{fmt}", args)
    page = vaas.queries(args.job, limit=args.limit, offset=args.offset)
    if fmt == "json":
        if args.output and args.output != "-":
            Path(args.output).expanduser().write_text(json.dumps(page, indent=2) + "\n", encoding="utf-8")
            out(f"saved {args.output} ({len(page.get('items') or [])} rows of {page.get('total')})")
        else:
            print_json(page)
        return EXIT_OK
    items, total = items_of(page)
    rows = [(q.get("seq"), q.get("batch_id"), q.get("status"), q.get("label"), q.get("label_name"),
             num(q.get("probability"), 4), num(q.get("latency_ms"), 1), (q.get("clip_sha256") or "")[:16],
             when(q.get("created_at"))) for q in items]
    out(render_table(("SEQ", "BATCH", "STATUS", "LABEL", "NAME", "PROB", "MS", "SHA256", "SENT"), rows,
                     right=(0, 1, 3, 5, 6)))
    page_footer(len(items), total, args.offset)
    return EXIT_OK


def cmd_jobs(vaas: VaasClient, args: argparse.Namespace) -> int:
    page = vaas.list_jobs(status=args.status, limit=args.limit, offset=args.offset)
    if args.json:
        print_json(page)
        return EXIT_OK
    items, total = items_of(page)
    rows = []
    for j in items:
        p = j.get("progress") or {}
        goal = j.get("goal") if j.get("goal") != "targeted" else f"targeted→{j.get('target_label')}"
        rows.append((j.get("id"), j.get("status"),
                     j.get("attack") if j.get("kind") != "pretrain" else "rlsb pretrain",
                     j.get("model"), goal, f"{p.get('queries_used')}/{p.get('max_queries')}",
                     num(p.get("best_score")), when(j.get("created_at"))))
    if not rows:
        out("no jobs" + (f" with status {args.status}" if args.status else ""))
        return EXIT_OK
    out(render_table(("ID", "STATUS", "ATTACK", "MODEL", "GOAL", "QUERIES", "BEST", "CREATED"), rows,
                     right=(5, 6)))
    page_footer(len(items), total, args.offset)
    return EXIT_OK


# ------------------------------------------------------------------------------------ policies
def cmd_policy_pretrain(vaas: VaasClient, args: argparse.Namespace) -> int:
    params = json_object(args.params) if args.params is not None else {}
    policy = vaas.pretrain_policy(model=args.model, goal=args.goal, max_queries=args.max_queries,
                                  params=params)
    if args.json and not args.wait:
        print_json(policy)
        return EXIT_OK
    if not args.json:
        out(policy["id"])
    if not args.wait:
        note(f"follow it: vaas wait {policy['id']}  ·  vaas policy status {policy['id']}")
        return EXIT_OK
    try:
        job = wait_job(vaas, policy["id"], args)
    except WaitTimeout as exc:
        raise VaasError(str(exc)) from exc
    final = vaas.get_policy(policy["id"])
    if args.json:
        print_json(final)
    else:
        out(policy_view(final))
    return job_exit(job)


def cmd_policy_list(vaas: VaasClient, args: argparse.Namespace) -> int:
    page = vaas.list_policies(model=args.model, goal=args.goal, limit=args.limit, offset=args.offset)
    if args.json:
        print_json(page)
        return EXIT_OK
    items, total = items_of(page)
    if not items:
        out("no policies" + (f" for {args.model}" if args.model else ""))
        return EXIT_OK
    rows = [(p.get("id"), p.get("status"), p.get("model"), p.get("goal"),
             f"{(p.get('progress') or {}).get('queries_used')}/"
             f"{(p.get('progress') or {}).get('max_queries')}",
             "yes" if (p.get("links") or {}).get("weights") else "no", when(p.get("created_at")))
            for p in items]
    out(render_table(("ID", "STATUS", "MODEL", "GOAL", "QUERIES", "WEIGHTS", "CREATED"), rows, right=(4,)))
    page_footer(len(items), total, args.offset)
    return EXIT_OK


def cmd_policy_status(vaas: VaasClient, args: argparse.Namespace) -> int:
    policy = vaas.get_policy(args.id)
    if args.json:
        print_json(policy)
    else:
        out(policy_view(policy))
    return EXIT_OK


def cmd_policy_download(vaas: VaasClient, args: argparse.Namespace) -> int:
    return save(lambda dest: vaas.download_policy(args.id, dest), args.output, f"{args.id}-rlsb-policy.pt",
                args)


# ------------------------------------------------------------------------------------ campaigns
def cmd_campaign_create(vaas: VaasClient, args: argparse.Namespace) -> int:
    attacks = [attack_spec(text) for text in args.attack]
    if args.target_rule is not None and args.goal != "targeted":
        raise UsageError("--target-rule is only used with --goal targeted")
    rule = target_rule(args.target_rule or "next") if args.goal == "targeted" else None
    clips = {key: value for key, value in (("set", args.clip_set), ("per_class", args.per_class),
                                           ("limit", args.limit_clips)) if value is not None}
    campaign = vaas.create_campaign(model=args.model, attacks=attacks, goal=args.goal, target_rule=rule,
                                    max_queries=args.max_queries, clips=clips or None)
    if args.json and not args.wait:
        print_json(campaign)
        return EXIT_OK
    if not args.json:
        out(campaign["id"])
        count = (campaign.get("progress") or {}).get("jobs", len(campaign.get("jobs") or []))
        model = campaign.get("model") or args.model or "the default model"
        note(f"queued: {count} job{'' if count == 1 else 's'} on {model} "
             f"({', '.join(a['name'] for a in attacks)}), {args.max_queries} queries each")
    if not args.wait:
        note(f"follow it: vaas campaign wait {campaign['id']}  ·  table: vaas report {campaign['id']}")
        return EXIT_OK
    return finish_campaign_wait(vaas, campaign["id"], args, first=campaign)


def finish_campaign_wait(vaas: VaasClient, campaign_id: str, args: argparse.Namespace,
                         first: dict[str, Any] | None = None) -> int:
    try:
        campaign = wait_campaign(vaas, campaign_id, args, first=first)
    except WaitTimeout as exc:
        if args.json:
            print_json(exc.last)
        raise VaasError(str(exc)) from exc
    if args.json:
        print_json(campaign)
    else:
        out(campaign_view(campaign, jobs=False))
    return campaign_exit(campaign)


def rule_text(rule: Any) -> str | None:
    if not isinstance(rule, Mapping):
        return None if rule is None else str(rule)
    kind = rule.get("kind")
    return f"fixed:{rule.get('label')}" if kind == "fixed" else str(kind)


def attacks_text(attacks: Any) -> str | None:
    if not attacks:
        return None
    parts = []
    for a in attacks:
        if isinstance(a, Mapping):
            params = a.get("params")
            parts.append(f"{a.get('name')}" + (f" {short_json(params)}" if params else ""))
        else:
            parts.append(str(a))
    return ", ".join(parts)


def _clips_text(clips: Mapping[str, Any]) -> str | None:
    if not clips:
        return None
    text = f"{clips.get('set')}, {clips.get('per_class')} per class"
    if clips.get("limit"):
        text += f", first {clips['limit']}"
    if clips.get("count") is not None:
        text += f" → {clips['count']} clips"
    return text


def campaign_view(campaign: Mapping[str, Any], jobs: bool = True) -> str:
    progress = campaign.get("progress") or {}
    clips = campaign.get("clips") or {}
    goal = campaign.get("goal")
    if goal == "targeted" and campaign.get("target_rule"):
        goal = f"targeted (target rule {rule_text(campaign.get('target_rule'))})"
    line = (f"{progress.get('finished')}/{progress.get('jobs')} jobs ended, "
            f"{progress.get('succeeded')} succeeded; "
            f"{progress.get('queries_used')}/{progress.get('max_queries')} queries")
    times = " · ".join(f"{k} {when(campaign.get(f'{k}_at'))}" for k in ("created", "started", "finished")
                       if campaign.get(f"{k}_at"))
    text = kv_block([
        ("campaign", campaign.get("id")),
        ("status", campaign.get("status")),
        ("model", f"{campaign.get('model')}, {goal}"),
        ("attacks", attacks_text(campaign.get("attacks"))),
        ("clips", _clips_text(clips)),
        ("budget", f"{campaign.get('max_queries')} queries per job" if campaign.get("max_queries") else None),
        ("progress", line if progress else None),
        ("error", campaign.get("error")),
        ("time", times),
        ("report", f"vaas report {campaign.get('id')}"),
    ])
    job_rows = campaign.get("jobs") or []
    if jobs and job_rows:
        rows = [(j.get("id"), j.get("attack"), j.get("clip_index"), j.get("target_label"), j.get("status"),
                 j.get("queries_used")) for j in job_rows]
        text += "\n\n" + render_table(("JOB", "ATTACK", "CLIP", "TARGET", "STATUS", "QUERIES"), rows,
                                       right=(2, 3, 5))
    return text


def cmd_campaign_status(vaas: VaasClient, args: argparse.Namespace) -> int:
    campaign = vaas.get_campaign(args.id)
    if args.json:
        print_json(campaign)
    else:
        out(campaign_view(campaign))
    return EXIT_OK


def cmd_campaign_wait(vaas: VaasClient, args: argparse.Namespace) -> int:
    return finish_campaign_wait(vaas, args.id, args)


def cmd_campaign_cancel(vaas: VaasClient, args: argparse.Namespace) -> int:
    campaign = vaas.cancel_campaign(args.id)
    if args.json:
        print_json(campaign)
    else:
        progress = campaign.get("progress") or {}
        out(f"campaign {campaign.get('id', args.id)} is {campaign.get('status')}"
            + (f" ({progress.get('finished')}/{progress.get('jobs')} jobs ended)" if progress else ""))
    return EXIT_OK


def cmd_campaign_list(vaas: VaasClient, args: argparse.Namespace) -> int:
    page = vaas.list_campaigns(limit=args.limit, offset=args.offset)
    if args.json:
        print_json(page)
        return EXIT_OK
    items, total = items_of(page)
    if not items:
        out("no campaigns")
        return EXIT_OK
    rows = []
    for c in items:
        p = c.get("progress") or {}
        names = ",".join(a.get("name", "?") if isinstance(a, Mapping) else str(a)
                         for a in c.get("attacks") or [])
        rows.append((c.get("id"), c.get("status"), c.get("model"), c.get("goal"), names,
                     f"{p.get('finished')}/{p.get('jobs')}", p.get("succeeded"),
                     f"{p.get('queries_used')}/{p.get('max_queries')}", when(c.get("created_at"))))
    out(render_table(("ID", "STATUS", "MODEL", "GOAL", "ATTACKS", "ENDED", "SUCCEEDED", "QUERIES", "CREATED"),
                     rows, right=(5, 6, 7)))
    page_footer(len(items), total, args.offset)
    return EXIT_OK


# ------------------------------------------------------------------------------------ report
REPORT_COLUMNS = ("ATTACK", "JOBS", "FR", "Q MEAN (SUCC)", "Q MEDIAN (SUCC)", "Q MEAN (ALL)", "MAP", "L∞",
                  "SPARSITY")


def _flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        name = name.lower().replace(" ", "_").replace("-", "_").replace(".", "_")
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _pick(flat: Mapping[str, Any], exact: Sequence[str], need: Sequence[Sequence[str]] = (),
          avoid: Sequence[str] = ()) -> Any:
    """The first exact key present, else the first key holding one of each `need` group and no `avoid`."""
    for key in exact:
        if flat.get(key) is not None:
            return flat[key]
    if need:
        for key, value in flat.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if (all(any(token in key for token in group) for group in need)
                    and not any(t in key for t in avoid)):
                return value
    return None


def report_rows(report: Any) -> list[tuple[str, dict[str, Any]]]:
    """(attack name, flattened row) for each attack of a report, whatever its exact container."""
    rows: Any = report
    if isinstance(report, Mapping):
        rows = None
        for key in ("rows", "by_attack", "table", "results", "summary", "attacks"):
            candidate = report.get(key)
            if (isinstance(candidate, Mapping) and candidate
                    and all(isinstance(v, Mapping) for v in candidate.values())):
                rows = [{"attack": name, **value} for name, value in candidate.items()]
                break
            if isinstance(candidate, list) and candidate and all(isinstance(v, Mapping) for v in candidate):
                if key == "attacks" and all(set(v) <= {"name", "params"} for v in candidate):
                    continue  # the campaign's attack list, not results
                rows = candidate
                break
    if not isinstance(rows, list):
        return []
    result = []
    for row in rows:
        if isinstance(row, Mapping):
            flat = _flatten(row)
            name = flat.get("attack") or flat.get("name") or flat.get("attack_name") or "?"
            result.append((str(name), flat))
    return result


def report_table(report: Any) -> str | None:
    rows = []
    for name, flat in report_rows(report):
        jobs = _pick(flat, ("clips", "jobs", "n_jobs", "n", "count", "total", "jobs_total"))
        if isinstance(jobs, list):
            jobs = len(jobs)
        ended = flat.get("finished")
        partial = isinstance(ended, int) and isinstance(jobs, int) and ended < jobs
        jobs_text = f"{ended}/{jobs}" if partial else num(jobs)
        fr = _pick(flat, ("fooling_rate", "fr", "success_rate", "fooling_rate_fraction"), [("fool", "fr_")])
        if fr is None:
            succeeded = _pick(flat, ("successes", "succeeded", "n_succeeded"))
            if isinstance(succeeded, (int, float)) and isinstance(jobs, (int, float)) and jobs:
                fr = succeeded / jobs
        succ = ("succ",)
        rows.append((
            name,
            jobs_text,
            percent(fr),
            num(_pick(flat, ("queries_mean_success", "queries_success_mean", "queries_mean_successes",
                             "queries_successes_mean", "queries_succeeded_mean", "mean_queries_success"),
                      [("quer",), ("mean", "avg"), succ], avoid=("all", "fail")), 1),
            num(_pick(flat, ("queries_median_success", "queries_success_median", "queries_median_successes",
                             "queries_successes_median", "queries_succeeded_median",
                             "median_queries_success"),
                      [("quer",), ("median",)], avoid=("all", "fail")), 1),
            num(_pick(flat, ("queries_mean_all", "queries_all_mean", "queries_mean", "mean_queries"),
                      [("quer",), ("mean", "avg"), ("all",)]), 1),
            num(_pick(flat, ("map", "map_mean", "mean_map", "mean_absolute_perturbation"), [("map",)])),
            num(_pick(flat, ("linf", "linf_mean", "mean_linf", "l_inf"), [("linf", "l_inf")])),
            num(_pick(flat, ("sparsity", "sparsity_mean", "mean_sparsity"), [("sparsity",)])),
        ))
    if not rows:
        return None
    return render_table(REPORT_COLUMNS, rows, right=range(1, len(REPORT_COLUMNS)))


def cmd_report(vaas: VaasClient, args: argparse.Namespace) -> int:
    if args.format != "json" or (args.output and args.output != "-"):
        if args.output is None or args.output == "-":
            vaas.export_campaign_report(args.id, stdout_binary(), args.format)
            return EXIT_OK
        return save(lambda dest: vaas.export_campaign_report(args.id, dest, args.format), args.output,
                    f"{args.id}-report.{args.format}", args)
    report = vaas.campaign_report(args.id)
    if args.json:
        print_json(report)
        return EXIT_OK
    table = report_table(report)
    if table is None:
        note("vaas: the report has no per-attack rows this client can tabulate; showing it as JSON")
        print_json(report)
        return EXIT_OK
    if isinstance(report, Mapping):
        header = [(k, report[k]) for k in ("campaign", "model") if isinstance(report.get(k), str)]
        goal = report.get("goal")
        if goal == "targeted" and report.get("target_rule"):
            goal = f"targeted (target rule {rule_text(report['target_rule'])})"
        header.append(("goal", goal))
        if report.get("max_queries"):
            header.append(("budget", f"{report['max_queries']} queries per job"))
        if isinstance(report.get("jobs"), int):
            state = "complete" if report.get("complete") else "in progress"
            header.append(("jobs", f"{report.get('finished')}/{report['jobs']} ended ({state})"))
        header = [(k, v) for k, v in header if v not in (None, "")]
        if header:
            out(kv_block(header))
            out("")
    out(table)
    if isinstance(report, Mapping) and isinstance(report.get("notes"), list):
        for line in report["notes"]:
            out(f"note: {line}")
    note("FR: fooling rate; queries mean/median over successful jobs, mean over all jobs")
    return EXIT_OK


# ==================================================================================== the parser
class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions; keeps multi-line text (the examples) as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, terminal_width()))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


MAIN_EPILOG = """\
configuration:
  --url / VAAS_URL       the API (default http://127.0.0.1:8000)
  --key / VAAS_API_KEY   your API key; an operator creates one with `python -m api.keys create NAME`

exit codes:
  0 done · 1 the API refused the request or could not be reached · 2 usage error
  3 `wait` (or --wait) saw the job/campaign end without success · 130 interrupted

examples:
  export VAAS_URL=http://127.0.0.1:8000 VAAS_API_KEY=vaas_…
  vaas attacks                                   # what can be run (vaas attacks nes_pgd: its parameters)
  vaas models mini_c3d                           # input spec and label indexes
  JOB=$(vaas submit clip.mp4 --attack nes_pgd --model mini_c3d --max-queries 10000)
  vaas wait $JOB && vaas download $JOB --format mkv
  vaas queries $JOB --format csv -o queries.csv
  vaas campaign create --model mini_c3d --attack nes_pgd --attack 'opt:{"alpha":0.2}' \\
      --max-queries 2000 --wait
"""


def _add_json(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `vaas --json CMD` and `vaas CMD --json` both work, the subcommand not resetting the other.
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the API's JSON instead of a human summary")


def _add_wait_options(parser: argparse.ArgumentParser, *, default_interval: float = 1.0) -> None:
    parser.add_argument("--timeout", type=non_negative_float, default=None, metavar="S",
                        help="give up waiting after S seconds (exit 1; the work goes on)")
    parser.add_argument("--interval", type=non_negative_float, default=default_interval, metavar="S",
                        help=f"seconds between polls (default {default_interval:g})")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="force the progress bar on or off (default: on when stderr is a terminal)")


def _command(commands: Any, name: str, func: Callable[..., int], help_text: str, examples: str,
             *, json_flag: bool = True, needs_key: bool = True,
             description: str | None = None) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=description or help_text,
                                 epilog="examples:\n" + examples, formatter_class=_Formatter)
    parser.set_defaults(func=func, needs_key=needs_key)
    if json_flag:
        _add_json(parser)
    return parser


def _list_options(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help=f"page size ({default_help})")
    parser.add_argument("--offset", type=non_negative_int, default=0, metavar="K", help="skip the first K")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaas",
        description="Command-line client of VAAS, the black-box video attack service (HTTP API only).",
        epilog=MAIN_EPILOG, formatter_class=_Formatter,
    )
    parser.add_argument("--url", default=os.environ.get("VAAS_URL") or DEFAULT_URL,
                        help="API base URL (env VAAS_URL; default %(default)s)")
    parser.add_argument("--key", default=os.environ.get("VAAS_API_KEY"),
                        help="API key (env VAAS_API_KEY)")
    parser.add_argument("--http-timeout", type=non_negative_float, default=120.0, metavar="S",
                        help="seconds to wait for one HTTP answer (default %(default)g)")
    parser.add_argument("--json", action="store_true", default=False,
                        help="machine output: print the API's JSON")
    parser.add_argument("--version", action="version", version="%(prog)s 0.1.0")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True

    # ---- catalog
    p = _command(commands, "health", cmd_health,
                 "is the service up (database, broker, oracle)? no key needed",
                 "  vaas health\n  vaas --url http://gpu-box:8000 health --json\n", needs_key=False)
    p = _command(commands, "attacks", cmd_attacks, "list the attacks, or one attack's parameters",
                 "  vaas attacks\n  vaas attacks nes_pgd          # its parameters, types and defaults\n"
                 "  vaas attacks --json | jq '.[].name'\n")
    p.add_argument("name", nargs="?", help="show this attack's parameters")
    p = _command(commands, "models", cmd_models, "list the served models, or one model's labels",
                 "  vaas models\n  vaas models mini_c3d          # label indexes, for --target\n")
    p.add_argument("name", nargs="?", help="show this model's input spec and labels")

    # ---- jobs
    p = _command(commands, "submit", cmd_submit, "upload a clip and start an attack; prints the job id",
                 "  vaas submit clip.mp4 --attack nes_pgd --model mini_c3d --max-queries 10000\n"
                 "  vaas submit clip.npy --attack vbad --target 3 --max-queries 50000 "
                 "--params '{\"epsilon\": 0.05}'\n"
                 "  vaas submit clip.mkv --attack opt --max-queries 5000 --params @opt.json --wait\n"
                 "  JOB=$(vaas submit clip.mp4 --attack sign_opt --max-queries 20000)\n",
                 description="Upload a clip (mp4, avi, mkv, webm or a uint8 T×H×W×3 .npy) and start an "
                             "attack on it. The clean clip's prediction is the job's first query. Prints the "
                             "job id (with --wait: then waits like `vaas wait`, exit 0 on success, "
                             "3 otherwise).")
    p.add_argument("video", help="the clip to attack")
    p.add_argument("--attack", required=True, metavar="NAME", help="see `vaas attacks`")
    p.add_argument("--model", metavar="M", help="see `vaas models` (default: the server's default model)")
    p.add_argument("--goal", choices=("untargeted", "targeted"),
                   help="default untargeted; targeted when --target is given")
    p.add_argument("--target", type=int, metavar="LABEL", help="target label index (goal targeted)")
    p.add_argument("--max-queries", type=positive_int, required=True, metavar="N",
                   help="the job's query budget, clean-clip query and final check included")
    p.add_argument("--params", metavar="JSON|@FILE", help="the attack's parameters, a JSON object")
    p.add_argument("--wait", action="store_true", help="wait for the job to end (progress bar)")
    _add_wait_options(p)

    p = _command(commands, "status", cmd_status, "a job's status, progress and metrics",
                 "  vaas status $JOB\n  vaas status $JOB --json | jq .metrics\n")
    p.add_argument("job", help="job id")

    p = _command(commands, "wait", cmd_wait, "wait for a job to end, with a progress bar",
                 "  vaas wait $JOB\n  vaas wait $JOB --timeout 600 && vaas download $JOB\n",
                 description="Poll GET /jobs/{id} until the job ends, showing queries used / budget, its "
                             "status and best score. Exit 0 if it succeeded, 3 if it ended otherwise "
                             "(budget_exhausted, failed, cancelled, error), 1 on --timeout.")
    p.add_argument("job", help="job id")
    _add_wait_options(p)

    p = _command(commands, "cancel", cmd_cancel,
                 "cancel a job (a running one stops at its next oracle round)",
                 "  vaas cancel $JOB\n")
    p.add_argument("job", help="job id")

    p = _command(commands, "download", cmd_download, "download a job's adversarial clip (lossless)",
                 "  vaas download $JOB                      # → <job>-adversarial.npy\n"
                 "  vaas download $JOB --format mkv -o adv.mkv\n"
                 "  vaas download $JOB -o - > adv.npy\n")
    p.add_argument("job", help="job id")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="file or folder to write (default <job>-adversarial.<format>; - for stdout)")
    p.add_argument("--format", choices=("npy", "mkv"), default="npy",
                   help="npy: uint8 T×H×W×3; mkv: FFV1 RGB in Matroska (default npy)")

    p = _command(commands, "queries", cmd_queries, "a job's query audit log",
                 "  vaas queries $JOB                       # first 100 rows as a table\n"
                 "  vaas queries $JOB --limit 20 --offset 100\n"
                 "  vaas queries $JOB --format csv -o queries.csv   # the whole log\n"
                 "  vaas queries $JOB --format jsonl | wc -l\n",
                 description="table/json: one page of the log (--limit/--offset). csv/jsonl: the whole log, "
                             "streamed to -o PATH or stdout.")
    p.add_argument("job", help="job id")
    p.add_argument("--format", choices=("table", "json", "csv", "jsonl"), default="table",
                   help="default: a table of one page")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="write to this file (csv/jsonl/json; default stdout)")
    _list_options(p, "server default 100")

    p = _command(commands, "jobs", cmd_jobs, "list your jobs, newest first",
                 "  vaas jobs\n  vaas jobs --status running\n  vaas jobs --limit 5 --json\n")
    p.add_argument("--status", choices=JOB_STATUSES, help="only jobs with this status")
    _list_options(p, "server default 50")

    # ---- policies
    policy = commands.add_parser("policy", help="RLSB policies: pretrain, list, status, download",
                                 description="RLSB policies: pre-training is a job of its own with its own "
                                             "budget; an rlsb attack uses the newest finished policy of its "
                                             "model and goal, or params.policy.",
                                 epilog="examples:\n"
                                        "  vaas policy pretrain --model mini_c3d --max-queries 18000\n"
                                        "  vaas policy list --model mini_c3d\n",
                                 formatter_class=_Formatter)
    policies = policy.add_subparsers(dest="policy_command", metavar="COMMAND", title="commands")
    policies.required = True
    p = _command(policies, "pretrain", cmd_policy_pretrain, "start RLSB policy pre-training; prints its id",
                 "  vaas policy pretrain --model mini_c3d --max-queries 18000\n"
                 "  vaas policy pretrain --model mini_c3d --goal targeted --max-queries 5000 "
                 "--params '{\"iterations\": 10}' --wait\n")
    p.add_argument("--model", metavar="M", help="default: the server's default model")
    p.add_argument("--goal", choices=("untargeted", "targeted"), default="untargeted")
    p.add_argument("--max-queries", type=positive_int, required=True, metavar="N",
                   help="the pre-training job's own budget")
    p.add_argument("--params", metavar="JSON|@FILE",
                   help="pre-training parameters (GET /policies/parameters)")
    p.add_argument("--wait", action="store_true", help="wait for pre-training to end (progress bar)")
    _add_wait_options(p, default_interval=2.0)
    p = _command(policies, "list", cmd_policy_list, "list your policies, newest first",
                 "  vaas policy list\n  vaas policy list --model mini_c3d --goal untargeted\n")
    p.add_argument("--model", metavar="M", help="only this model's policies")
    p.add_argument("--goal", choices=("untargeted", "targeted"))
    _list_options(p, "server default 50")
    p = _command(policies, "status", cmd_policy_status, "a policy's pre-training status and report",
                 "  vaas policy status $ID\n")
    p.add_argument("id", help="policy id (its pre-training job's id)")
    p = _command(policies, "download", cmd_policy_download, "download a policy's weights (.pt)",
                 "  vaas policy download $ID                # → <id>-rlsb-policy.pt\n"
                 "  vaas policy download $ID -o p.pt\n")
    p.add_argument("id", help="policy id")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="file or folder (default <id>-rlsb-policy.pt; - for stdout)")

    # ---- campaigns
    campaign = commands.add_parser("campaign", help="campaigns: many attacks × many clips, one report",
                                   description="A campaign runs each attack on each clip of a set (jobs with "
                                               "the same budget) and reports the robustness table.",
                                   epilog="examples:\n  vaas campaign create --model mini_c3d "
                                          "--attack nes_pgd --attack opt --max-queries 2000\n"
                                          "  vaas campaign wait $CID && vaas report $CID\n",
                                   formatter_class=_Formatter)
    campaigns = campaign.add_subparsers(dest="campaign_command", metavar="COMMAND", title="commands")
    campaigns.required = True
    p = _command(campaigns, "create", cmd_campaign_create, "start a campaign; prints its id",
                 "  vaas campaign create --model mini_c3d --attack nes_pgd --attack sign_opt "
                 "--max-queries 5000\n"
                 "  vaas campaign create --model mini_c3d --attack 'nes_pgd:{\"epsilon\": 0.03}' \\\n"
                 "      --goal targeted --target-rule fixed:2 --max-queries 20000 --per-class 2 --wait\n")
    p.add_argument("--model", metavar="M", help="see `vaas models` (default: the server's default model)")
    p.add_argument("--attack", required=True, action="append", metavar="NAME[:JSON]",
                   help="an attack, optionally with params (NAME:{json} or NAME:@file.json); repeat for more")
    p.add_argument("--goal", choices=("untargeted", "targeted"), default="untargeted")
    p.add_argument("--target-rule", metavar="RULE",
                   help="targeted only: next (default), random[:SEED], fixed:LABEL or per_clip:L1,L2,…")
    p.add_argument("--max-queries", type=positive_int, required=True, metavar="N",
                   help="budget of each job (the same for every attack)")
    p.add_argument("--set", dest="clip_set", metavar="SET", help="the clip set (server default: attack_set)")
    p.add_argument("--per-class", type=int, choices=(1, 2), help="clips of each class (server default)")
    p.add_argument("--limit-clips", type=positive_int, metavar="N",
                   help="only the first N clips (a quick look)")
    p.add_argument("--wait", action="store_true", help="wait for the campaign to end (progress bar)")
    _add_wait_options(p, default_interval=2.0)
    p = _command(campaigns, "status", cmd_campaign_status, "a campaign's progress and jobs",
                 "  vaas campaign status $CID\n")
    p.add_argument("id", help="campaign id")
    p = _command(campaigns, "wait", cmd_campaign_wait, "wait for a campaign to end, with a progress bar",
                 "  vaas campaign wait $CID\n  vaas campaign wait $CID --timeout 3600 && vaas report $CID\n",
                 description="Poll GET /campaigns/{id} until it ends (bar: jobs ended / jobs). Exit 0 when "
                             "it ended normally, 3 when cancelled or in error, 1 on --timeout.")
    p.add_argument("id", help="campaign id")
    _add_wait_options(p, default_interval=2.0)
    p = _command(campaigns, "cancel", cmd_campaign_cancel, "cancel a campaign's unfinished jobs",
                 "  vaas campaign cancel $CID\n")
    p.add_argument("id", help="campaign id")
    p = _command(campaigns, "list", cmd_campaign_list, "list your campaigns, newest first",
                 "  vaas campaign list\n")
    _list_options(p, "server default")
    for where, name in ((commands, "report"), (campaigns, "report")):
        p = _command(where, name, cmd_report, "a campaign's robustness table (per attack)",
                     "  vaas report $CID\n  vaas report $CID --format csv -o table.csv\n"
                     "  vaas report $CID --format html -o report.html\n",
                     description="json (default): printed as a table per attack — jobs (ended/all while "
                                 "running), fooling rate, "
                                 "queries mean/median over successes, queries mean over all, MAP, L∞, "
                                 "sparsity. csv/html: saved to -o PATH or written to stdout.")
        p.add_argument("id", help="campaign id")
        p.add_argument("--format", choices=("json", "csv", "html"), default="json")
        p.add_argument("-o", "--output", metavar="PATH", help="write to this file (default stdout)")
    return parser


# ==================================================================================== main
def main(argv: Sequence[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run one command; returns the exit code. `transport` replaces the network (tests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not hasattr(args, "json"):
        args.json = False
    key = (args.key or "").strip() or None
    if args.needs_key and key is None:
        note("vaas: error: no API key: pass --key KEY or set VAAS_API_KEY "
             "(an operator creates one with `python -m api.keys create NAME`)")
        return EXIT_USAGE
    try:
        with VaasClient(args.url, key, timeout=args.http_timeout or 120.0, transport=transport) as vaas:
            return args.func(vaas, args)
    except UsageError as exc:
        note(f"vaas: error: {exc}")
        return EXIT_USAGE
    except VaasError as exc:
        note(f"vaas: error: {exc.detail}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        note("\nvaas: interrupted (a job or campaign goes on on the server; `vaas cancel` stops it)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `vaas queries … | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
