"""A campaign's report: per attack, the metrics of worker/metrics.summarize_outcomes over its jobs, as
JSON, CSV, or a page with plots (success rate against queries as in V-BAD's Fig. 4; MAP and queries
per attack). Every number is computed from the jobs' stored rows, nothing else."""
from __future__ import annotations

import csv
import html
import io
from typing import Any

from api.campaigns import campaign_jobs_by_attack
from db.models import Campaign, Job, JobStatus
from worker.metrics import success_curve, summarize_outcomes

COLUMNS = ("attack", "clips", "finished", "successes", "fooling_rate", "queries_mean_successes",
           "queries_median_successes", "queries_mean_all", "queries_median_all", "map", "linf", "sparsity",
           "frames_perturbed", "ssim", "seconds_mean", "queries_per_s")


def job_outcome(job: Job) -> dict[str, Any]:
    """A finished job as an outcome: success as the final verification said, queries as the log counts."""
    metrics = job.metrics or {}
    return {
        "success": job.status == JobStatus.succeeded.value,
        "queries": job.queries_used,
        "map": metrics.get("map"),
        "linf": metrics.get("linf"),
        "sparsity": metrics.get("sparsity"),
        "frames_perturbed": metrics.get("frames_perturbed"),
        "ssim": metrics.get("ssim"),
        "seconds": metrics.get("wall_time_s"),
    }


def campaign_report(campaign: Campaign) -> dict[str, Any]:
    rows, curves = [], {}
    for label, jobs in campaign_jobs_by_attack(campaign).items():
        finished = [job for job in jobs if JobStatus(job.status).terminal]
        outcomes = [job_outcome(job) for job in finished]
        rows.append({"attack": label, **summarize_outcomes(outcomes), "clips": len(jobs),
                     "finished": len(finished)})
        curves[label] = success_curve(outcomes, campaign.max_queries)
    total = len(campaign.jobs)
    done = sum(JobStatus(job.status).terminal for job in campaign.jobs)
    return {
        "campaign": campaign.id, "model": campaign.model, "goal": campaign.goal,
        "target_rule": campaign.target_rule, "max_queries": campaign.max_queries,
        "complete": done == total, "jobs": total, "finished": done,
        "attacks": rows, "success_curves": curves,
    }


def report_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["attacks"])
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return html.escape(str(value))


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def report_plots(report: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve_figure, axis = plt.subplots(figsize=(6.5, 3.6))
    for label, curve in report["success_curves"].items():
        if curve:
            axis.step([q for q, _ in curve], [100 * r for _, r in curve], where="post", label=label)
    axis.set(xlabel="queries", ylabel="clips fooled (%)", ylim=(0, 100), title="Success rate against queries")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    bars, (map_axis, query_axis) = plt.subplots(1, 2, figsize=(8, 3.2))
    labels = [row["attack"] for row in report["attacks"]]
    map_axis.bar(labels, [row["map"] or 0 for row in report["attacks"]], color="tab:orange")
    map_axis.set(title="MAP (0-255)", ylabel="mean |δ| per pixel value")
    query_axis.bar(labels, [row["queries_mean_all"] or 0 for row in report["attacks"]], color="tab:blue")
    query_axis.set(title="Queries (mean over all clips)")
    for ax in (map_axis, query_axis):
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    return [_svg(curve_figure), _svg(bars)]


def report_html(report: dict[str, Any]) -> str:
    head = ("<tr>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in COLUMNS) + "</tr>")
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in COLUMNS) + "</tr>"
        for row in report["attacks"]
    )
    status = ("complete" if report["complete"]
              else f"in progress: {report['finished']} of {report['jobs']} jobs")
    plots = "".join(f"<figure>{svg}</figure>" for svg in report_plots(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Campaign {report['campaign']}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:72em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em 1em 0 0}}</style></head><body>
<h1>Campaign {html.escape(report['campaign'])}</h1>
<p>Model <b>{html.escape(report['model'])}</b>, {html.escape(report['goal'])}, \
budget {report['max_queries']:,}
queries per job; {status}. Every attack got the same clips, targets and budget.</p>
<table>{head}{body}</table>
{plots}
<p>Fooling rate over all clips of an attack; queries over successes and over all clips (AstFocus Sec. 4.2);
MAP, L∞ and SSIM of the final clips. JSON and CSV: <code>?format=json|csv</code>.</p>
</body></html>"""
