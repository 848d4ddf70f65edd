"""The budgeted, audited door to the oracle: the only way an attack reaches the model.

For every request of N clips (DESIGN.md, "Queries and the budget"):
1. one transaction checks the cancel flag and reserves N queries atomically
   (`UPDATE jobs SET queries_used = queries_used + N WHERE … AND queries_used + N <= limit`) and
   writes N audit rows with status `sent` and the SHA-256 of each clip;
2. the request is sent;
3. a second transaction completes the rows (`answered` with label and probability, or `failed`).
So `count(rows) == queries_used <= max_queries` holds at every commit, and a request that failed
after being sent is still counted.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from core.video import clip_sha256
from db.models import Job, QueryRecord, QueryStatus
from model_server.client import OracleHTTP, OracleRejected, OracleUnavailable
from model_server.protocol import Prediction
from worker.leases import LeaseLost, ride_out


class BudgetExhausted(Exception):
    """No query is left in the job's budget for this request."""


class JobCancelled(Exception):
    """The job's owner cancelled it; raised at the next reservation."""


class OracleFailed(RuntimeError):
    """The oracle kept failing; the failed queries were counted."""


@dataclass(frozen=True)
class Reservation:
    first_seq: int
    batch_id: int
    size: int


class OracleClient:
    """Queries the oracle for one job, inside that job's budget, writing the audit log.

    `held_back` queries are kept out of the attack's reach so the worker can always spend the last one
    verifying the final artifact (which makes the artifact the job's last answered query).
    """

    def __init__(
        self,
        job_id: str,
        model: str,
        http: OracleHTTP,
        sessions: Callable[[], Session],
        max_batch: int = 48,
        held_back: int = 1,
        retries: int = 2,
        owner: str | None = None,
        db_patience_s: float = 0.0,
        outage_s: float = 0.0,
    ) -> None:
        self.job_id = job_id
        self.model = model
        self._http = http
        self._sessions = sessions
        self._max_batch = max_batch
        self._held_back = held_back
        self._retries = retries
        # The lease this runner holds (worker/leases.py): reservations happen only under it, so a runner
        # presumed dead can never spend the budget alongside the one that took the job over.
        self._owner = owner
        self._db_patience_s = db_patience_s
        # How long to keep retrying an unavailable oracle (e.g. TorchServe restarting a dead backend
        # worker) before the job fails; every attempt that was sent is counted.
        self._outage_s = outage_s
        self._next_batch: int | None = None  # the job's next batch id, read at the first reservation

    # ---------------------------------------------------------------- public API for attacks
    def query(self, clips: np.ndarray, partial: bool = False) -> list[Prediction]:
        """Evaluate N clips (N×T×H×W×3 uint8). Every clip sent counts as one query.

        With `partial`, a request larger than the remaining budget is shrunk to what is left and
        fewer answers come back (the first ones); otherwise it raises BudgetExhausted unsent.
        """
        if clips.ndim == 4:
            clips = clips[None]
        answers: list[Prediction] = []
        for start in range(0, len(clips), self._max_batch):
            chunk = clips[start : start + self._max_batch]
            got = self._query_chunk(chunk, partial)
            answers.extend(got)
            if len(got) < len(chunk):
                break
        return answers

    def query_one(self, clip: np.ndarray) -> Prediction:
        return self.query(clip[None])[0]

    def verify(self, clip: np.ndarray) -> Prediction:
        """The final check of the artifact, paid from the held-back query."""
        return self._query_chunk(clip[None], partial=False, limit_offset=0)[0]

    @property
    def remaining(self) -> int:
        """Queries the attack may still spend (excluding the held-back verification)."""
        with self._sessions() as session:
            used, cap = session.execute(
                select(Job.queries_used, Job.max_queries).where(Job.id == self.job_id)
            ).one()
        return max(0, cap - self._held_back - used)

    # ---------------------------------------------------------------- internals
    def _query_chunk(
        self, chunk: np.ndarray, partial: bool, limit_offset: int | None = None
    ) -> list[Prediction]:
        held = self._held_back if limit_offset is None else limit_offset
        hashes = [clip_sha256(c) for c in chunk]
        first_failure: float | None = None
        attempt = 0
        while True:
            reservation = self._reserve(hashes, partial, held)
            sent = chunk[: reservation.size]
            started = time.perf_counter()
            try:
                answers = self._http.predict(self.model, sent)
            except (OracleUnavailable, OracleRejected) as exc:
                self._complete_failed(reservation, str(exc))
                now = time.monotonic()
                first_failure = first_failure if first_failure is not None else now
                outage_left = self._outage_s - (now - first_failure)
                if isinstance(exc, OracleRejected) or (attempt >= self._retries and outage_left <= 0):
                    raise OracleFailed(f"oracle request failed: {exc}") from exc
                time.sleep(min(0.5 * 2**attempt, 8.0, max(outage_left, 0.5)))
                attempt += 1
                continue
            latency_ms = (time.perf_counter() - started) * 1000.0
            self._complete_answered(reservation, answers, latency_ms)
            return answers

    def _reserve(self, hashes: list[str], partial: bool, held: int) -> Reservation:
        """One transaction, retried whole through a database outage (nothing is sent until it commits).

        A connection lost during COMMIT leaves the outcome unknown: the reservation may have landed.
        Before trying again, a retry looks for the batch this reservation would have written (the
        job's next batch id, known because only the lease holder reserves) and adopts it, so an
        outage never reserves, and counts, the same clips twice.
        """
        expected = self._expected_batch()
        tries = 0

        def attempt() -> Reservation:
            nonlocal tries
            tries += 1
            landed = self._landed(expected, hashes) if tries > 1 else None
            return landed or self._reserve_once(hashes, partial, held)

        reservation = ride_out(attempt, self._db_patience_s, "reserving queries")
        self._next_batch = reservation.batch_id + 1
        return reservation

    def _expected_batch(self) -> int:
        if self._next_batch is None:
            def read() -> int:
                with self._sessions() as session:
                    return session.execute(select(Job.batches_sent).where(Job.id == self.job_id)).scalar_one()
            self._next_batch = ride_out(read, self._db_patience_s, "reading the job's batch count")
        return self._next_batch

    def _landed(self, batch_id: int, hashes: list[str]) -> Reservation | None:
        """The reservation of `hashes` as batch `batch_id` if an earlier attempt committed it."""
        with self._sessions() as session:
            rows = session.execute(
                select(QueryRecord.seq, QueryRecord.clip_sha256, QueryRecord.status)
                .where(QueryRecord.job_id == self.job_id, QueryRecord.batch_id == batch_id)
                .order_by(QueryRecord.seq)
            ).all()
        if not rows or [r.clip_sha256 for r in rows] != hashes[: len(rows)]:
            return None
        if any(r.status != QueryStatus.sent.value for r in rows):
            return None
        return Reservation(first_seq=rows[0].seq, batch_id=batch_id, size=len(rows))

    def _reserve_once(self, hashes: list[str], partial: bool, held: int) -> Reservation:
        wanted = len(hashes)
        with self._sessions() as session, session.begin():
            granted = self._try_reserve(session, wanted, held)
            if granted is None:
                cancelled, used, cap, lease_owner = session.execute(
                    select(Job.cancel_requested, Job.queries_used, Job.max_queries, Job.lease_owner).where(
                        Job.id == self.job_id
                    )
                ).one()
                if self._owner is not None and lease_owner != self._owner:
                    raise LeaseLost(self.job_id)
                if cancelled:
                    raise JobCancelled(self.job_id)
                left = cap - held - used
                if left <= 0 or not partial:
                    raise BudgetExhausted(f"{used} of {cap} queries used, {wanted} more requested")
                wanted = left
                granted = self._try_reserve(session, wanted, held)
                if granted is None:  # cancelled or spent between the two statements
                    raise BudgetExhausted(f"budget changed while reserving {wanted} queries")
            used_after, batch_id = granted
            first_seq = used_after - wanted
            session.execute(
                insert(QueryRecord),
                [
                    {
                        "job_id": self.job_id,
                        "seq": first_seq + i,
                        "batch_id": batch_id,
                        "clip_sha256": hashes[i],
                        "status": QueryStatus.sent.value,
                        "created_at": datetime.now(UTC),
                    }
                    for i in range(wanted)
                ],
            )
        return Reservation(first_seq=first_seq, batch_id=batch_id, size=wanted)

    def _try_reserve(self, session: Session, n: int, held: int) -> tuple[int, int] | None:
        fence = [Job.lease_owner == self._owner] if self._owner is not None else []
        row = session.execute(
            update(Job)
            .where(
                Job.id == self.job_id,
                Job.cancel_requested.is_(False),
                Job.queries_used + n <= Job.max_queries - held,
                *fence,
            )
            .values(queries_used=Job.queries_used + n, batches_sent=Job.batches_sent + 1)
            .returning(Job.queries_used, Job.batches_sent)
            .execution_options(synchronize_session=False)
        ).first()
        return None if row is None else (row[0], row[1] - 1)

    def _complete_answered(
        self, reservation: Reservation, answers: list[Prediction], latency_ms: float
    ) -> None:
        now = datetime.now(UTC)
        rows = [
            {
                "b_seq": reservation.first_seq + i,
                "status": QueryStatus.answered.value,
                "label": a["label"],
                "label_name": a["label_name"],
                "probability": a["probability"],
                "latency_ms": latency_ms,
                "answered_at": now,
            }
            for i, a in enumerate(answers)
        ]
        self._update_rows(rows)

    def _complete_failed(self, reservation: Reservation, error: str) -> None:
        now = datetime.now(UTC)
        rows = [
            {"b_seq": reservation.first_seq + i, "status": QueryStatus.failed.value, "error": error[:2000],
             "answered_at": now}
            for i in range(reservation.size)
        ]
        self._update_rows(rows)

    def _update_rows(self, rows: list[dict]) -> None:
        table = QueryRecord.__table__
        values = {k: bindparam(k) for k in rows[0] if k != "b_seq"}
        statement = (
            update(table)
            .where(table.c.job_id == self.job_id, table.c.seq == bindparam("b_seq"))
            .values(**values)
        )

        def write() -> None:
            with self._sessions() as session, session.begin():
                session.execute(statement, rows)

        ride_out(write, self._db_patience_s, "completing audit rows")
