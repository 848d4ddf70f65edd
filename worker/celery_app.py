"""The Celery app. One attack job per worker process, acknowledged only after it ends.

- `acks_late` + `reject_on_worker_lost`: a worker killed mid-job gives the job back to the broker, and
  the redelivered job resumes against the same budget (queries_used lives in the database).
- prefetch 1: a worker holds at most the job it runs, so jobs are not starved behind a long one.
- visibility_timeout above the hard time limit: Redis redelivers an unacknowledged task after that
  timeout. Should it fire anyway, the job's lease keeps the second delivery off it (worker/leases.py).
- every worker's main process runs the sweeper (worker/sweeper.py), which publishes again the tasks
  of jobs whose task was lost (Redis restarted, a whole worker SIGKILLed).
"""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from core.settings import get_settings

RUN_ATTACK_TASK = "vaas.run_attack"


def _transport_options(broker_url: str, visibility_timeout_s: int) -> dict:
    # Only brokers that redeliver on a timeout take the option; the embedded SQLAlchemy transport
    # would hand it to create_engine(), which refuses unknown arguments.
    if broker_url.startswith(("redis://", "rediss://")):
        # kombu looks for expired deliveries every interval × throttle seconds (100 s by default);
        # scale that to the timeout so a short timeout (tests) is honoured promptly.
        interval = max(1, min(10, visibility_timeout_s // 4))
        return {"visibility_timeout": visibility_timeout_s, "unacked_restore_interval": interval,
                "unacked_restore_throttle": 1 if visibility_timeout_s < 600 else 10}
    if broker_url.startswith("sqs://"):
        return {"visibility_timeout": visibility_timeout_s}
    return {}


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("vaas", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_hard_time_limit_s,
        broker_transport_options=_transport_options(
            settings.broker_url, settings.broker_visibility_timeout_s
        ),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return app


@worker_process_init.connect
def _own_database_connections(**_: object) -> None:
    """A pool process must not reuse the connections it inherited from the main process (the sweeper's):
    two processes on one Postgres connection corrupt each other's protocol state."""
    from db.session import get_engine

    get_engine().dispose(close=False)


@worker_process_init.connect
def _limit_torch_threads(**_: object) -> None:
    """Each worker process runs one job; its surrogate work gets `torch_threads` threads."""
    import torch

    from core.memory import keep_freed_memory

    torch.set_num_threads(get_settings().torch_threads)
    keep_freed_memory()


_sweepers: list = []


@worker_ready.connect
def _start_sweeper(sender: object = None, **_: object) -> None:
    from worker.sweeper import Sweeper

    sweeper = Sweeper(lambda job_id: celery_app.send_task(RUN_ATTACK_TASK, args=[job_id]))
    sweeper.start()
    _sweepers.append(sweeper)


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    for sweeper in _sweepers:
        sweeper.stopped.set()


celery_app = make_celery()
