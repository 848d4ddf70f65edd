"""Leases, the sweeper's choice of lost jobs, riding out database outages, and checkpoints: the pure
logic, on a throwaway SQLite database. (The faults themselves are injected in tests/test_faults_e2e.py.)"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy.event
import sqlalchemy.exc

from core.settings import Settings, get_settings
from db import session as db_session
from db.models import ApiKey, Job, JobStatus, QueryRecord
from worker import leases, runner
from worker.attacks.base import Best
from worker.oracle_client import OracleClient
from worker.sweeper import lost_jobs


@pytest.fixture
def database(tmp_path: Path, monkeypatch) -> Iterator[str]:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'vaas.db'}"
    monkeypatch.setenv("VAAS_DATABASE_URL", url)
    monkeypatch.setenv("VAAS_DATA_DIR", str(tmp_path / "var"))
    for cache in (get_settings, db_session.get_engine, db_session._factory):
        cache.cache_clear()
    upgrade(url)
    yield url
    for cache in (get_settings, db_session.get_engine, db_session._factory):
        cache.cache_clear()


def add_job(max_queries: int = 10) -> str:
    with db_session.session_scope() as session:
        key = ApiKey(name="k", prefix="vaas_x", key_hash="h" * 64)
        session.add(key)
        session.flush()
        job = Job(api_key_id=key.id, attack="nes_pgd", model="m", goal="untargeted", source_label=0,
                  params={}, max_queries=max_queries, queries_used=0, status=JobStatus.queued.value)
        session.add(job)
        session.flush()
        return job.id


def test_a_live_lease_keeps_a_second_delivery_off_the_job(database) -> None:
    job_id = add_job()
    first = runner._claim(job_id, "runner-a", lease_s=60)
    assert isinstance(first, Job) and first.attempts == 1 and first.lease_owner == "runner-a"
    assert runner._claim(job_id, "runner-b", lease_s=60) == "leased"


def test_an_expired_lease_is_taken_over_and_counted_as_an_attempt(database) -> None:
    job_id = add_job()
    runner._claim(job_id, "runner-a", lease_s=60)
    with db_session.session_scope() as session:
        session.get(Job, job_id).lease_expires_at = leases.utcnow() - timedelta(seconds=1)
    second = runner._claim(job_id, "runner-b", lease_s=60)
    assert isinstance(second, Job) and second.attempts == 2 and second.lease_owner == "runner-b"


def test_a_renewal_by_a_runner_that_lost_the_lease_fails(database) -> None:
    job_id = add_job()
    runner._claim(job_id, "runner-a", lease_s=60)
    assert leases.renew(job_id, "runner-a", 60)
    with db_session.session_scope() as session:
        session.get(Job, job_id).lease_owner = "runner-b"
    assert not leases.renew(job_id, "runner-a", 60)


class EchoOracle:
    def predict(self, model: str, clips: np.ndarray) -> list[dict]:
        return [{"label": 1, "label_name": "b", "probability": 0.5} for _ in clips]


def test_only_the_lease_holder_can_spend_the_budget(database) -> None:
    job_id = add_job(max_queries=10)
    runner._claim(job_id, "runner-a", lease_s=60)
    client = OracleClient(job_id, "m", EchoOracle(), db_session.new_session, owner="runner-a")
    clip = np.zeros((1, 2, 2, 2, 3), dtype=np.uint8)
    client.query(clip)
    with db_session.session_scope() as session:
        session.get(Job, job_id).lease_owner = "runner-b"  # presumed dead; b took over
    with pytest.raises(leases.LeaseLost):
        client.query(clip)
    with db_session.session_scope() as session:
        assert session.get(Job, job_id).queries_used == 1
        assert session.query(QueryRecord).filter_by(job_id=job_id).count() == 1


def sessions_that_lose_one_commit_acknowledgement():
    """A session factory whose first COMMIT lands in the database but raises as if the connection had
    dropped before the acknowledgement came back: the outcome the client cannot know."""
    armed = [True]

    def factory():
        session = db_session.new_session()

        @sqlalchemy.event.listens_for(session, "after_commit")
        def lose_the_ack(_session) -> None:
            if armed[0]:
                armed[0] = False
                raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return session
    return factory


def test_a_reservation_whose_commit_outcome_was_lost_is_not_made_twice(database) -> None:
    job_id = add_job(max_queries=10)
    runner._claim(job_id, "runner-a", lease_s=60)
    client = OracleClient(job_id, "m", EchoOracle(), sessions_that_lose_one_commit_acknowledgement(),
                          owner="runner-a", db_patience_s=5)
    clips = np.arange(3 * 24, dtype=np.uint8).reshape(3, 1, 2, 2, 6)[..., :3]
    assert len(client.query(clips)) == 3
    assert len(client.query(clips[:1])) == 1
    with db_session.session_scope() as session:
        assert session.get(Job, job_id).queries_used == 4
        rows = session.query(QueryRecord).filter_by(job_id=job_id).order_by(QueryRecord.seq).all()
        assert [(r.seq, r.batch_id, r.status) for r in rows] == [
            (0, 0, "answered"), (1, 0, "answered"), (2, 0, "answered"), (3, 1, "answered")]


def test_an_outage_is_ridden_out_then_given_up_on() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
        return "ok"

    assert leases.ride_out(flaky, patience_s=5, what="testing") == "ok" and len(calls) == 3

    def down() -> None:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(leases.DatabaseDown, match="unreachable for 0 s while testing"):
        leases.ride_out(down, patience_s=0, what="testing")


def test_a_bad_statement_is_not_mistaken_for_an_outage() -> None:
    def broken() -> None:
        raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        leases.ride_out(broken, patience_s=5, what="testing")


def test_the_sweeper_republishes_only_jobs_without_a_live_task() -> None:
    queued_waiting, queued_held, queued_lost, dead_runner, dead_runner_waiting = (
        f"{c * 32}" for c in "abcde")
    candidates = [(queued_waiting, "queued"), (queued_held, "queued"), (queued_lost, "queued"),
                  (dead_runner, "running"), (dead_runner_waiting, "running")]
    messages = ([f'{{"argsrepr": "[\'{queued_waiting}\']"}}', f"[{dead_runner_waiting}]"],
                [f"{queued_held}", f"{dead_runner}"])  # a dead worker's unacked task does not come back soon
    assert lost_jobs(candidates, messages) == [queued_lost, dead_runner]
    # A broker that cannot be inspected (the embedded SQL one) loses nothing queued; dead runners still count.
    assert lost_jobs(candidates, None) == [dead_runner, dead_runner_waiting]


def test_a_checkpoint_keeps_the_clip_with_the_score_it_earned(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    clip = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    saver = runner.Checkpointer("job", settings)
    saver.save(Best(clip=clip, score=0.75, success=True, distance=3.5))
    loaded = runner.Checkpointer("job", settings).load()
    assert (np.array_equal(loaded.clip, clip) and loaded.score == 0.75 and loaded.success
            and loaded.distance == 3.5)
    saver.save(Best(clip=clip, score=-0.2, success=False))
    assert runner.Checkpointer("job", settings).load().distance is None
    assert not list(tmp_path.rglob("*.tmp.npz"))
