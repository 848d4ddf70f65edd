"""The one settings object of VAAS, read from `VAAS_*` environment variables.

The API, the worker and the scripts all read their configuration here, so a deployment is configured
in one place (docker-compose sets the same variables the local launcher sets).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAAS_", env_file=None, extra="ignore")

    # --- storage -----------------------------------------------------------------------------
    database_url: str = Field(
        "postgresql+psycopg://postgres@127.0.0.1:5432/vaas",
        description="SQLAlchemy URL. Postgres in deployment; sqlite:///… is the embedded default.",
    )
    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery broker. sqla+sqlite:///… is the embedded default that needs no server.",
    )
    data_dir: Path = Field(REPO_ROOT / "var", description="Uploads, artifacts and checkpoints.")

    # --- oracle (TorchServe) ------------------------------------------------------------------
    oracle_url: str = "http://127.0.0.1:8080"
    oracle_management_url: str = "http://127.0.0.1:8081"
    oracle_token: str | None = Field(
        None, description="Bearer token of TorchServe's inference API when auth is on.",
    )
    oracle_management_token: str | None = Field(
        None, description="Bearer token of TorchServe's management API when auth is on (key_file.json's "
        "'management' key; compose reads both tokens from TorchServe's key file).",
    )
    oracle_timeout_s: float = 60.0
    oracle_outage_s: float = Field(
        30.0, ge=0, description="How long a job keeps retrying an unavailable oracle before it ends with an "
        "error (each attempt sent is counted as queries).",
    )
    oracle_max_batch: int = Field(48, description="Most clips one oracle request may carry.")
    default_model: str = "mini_c3d"

    # --- API ---------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000

    # --- API limits ---------------------------------------------------------------------------
    max_upload_bytes: int = 64 * 1024 * 1024
    max_queries_cap: int = 200_000
    max_decode_frames: int = 4_096
    max_decode_pixels: int = 4096 * 2160
    max_decode_total_pixels: int = Field(
        1 << 30, description="Most pixels decoded from one upload (frames × width × height): a short 4K "
        "video fits, a tiny file that expands to hours of 4K (a decompression bomb) does not.",
    )
    api_key_header: str = "X-API-Key"
    page_size_max: int = 500

    # --- per-key limits (defaults for keys without their own; `python -m api.keys limits`) --------
    # A campaign's jobs count one by one, so the defaults let one campaign of the largest size (2 000
    # jobs) through; tighten them per key for clients that only submit single jobs.
    key_jobs_per_minute: int = Field(2_000, ge=1, description="Jobs a key may submit per rolling minute.")
    key_active_jobs: int = Field(2_000, ge=1, description="Jobs of a key queued or running at once.")
    key_total_queries: int = Field(
        100_000_000, ge=1,
        description="Lifetime queries of a key: spent by ended jobs plus the budgets of active ones.",
    )

    # --- worker -------------------------------------------------------------------------------
    device: str = Field("auto", description="'auto' picks CUDA when present, else CPU.")
    task_soft_time_limit_s: int = 3_600
    task_hard_time_limit_s: int = 3_660
    broker_visibility_timeout_s: int = 7_200
    checkpoint_every_s: float = 30.0
    job_lease_s: float = Field(
        60.0, gt=0, description="A running job's lease; its heartbeat renews it every quarter of this. A "
        "redelivered job resumes only after the lease of a dead runner has expired.",
    )
    sweep_interval_s: float = Field(
        15.0, gt=0, description="How often each worker looks for jobs whose task was lost (dead runner, "
        "broker restarted) and publishes them again.",
    )
    db_retry_s: float = Field(
        60.0, ge=0, description="How long a running job rides out a database outage before it stops and is "
        "retried later.",
    )
    torch_threads: int = Field(
        1, ge=1, description="Torch CPU threads per worker process (the attacker's surrogates and agents); "
        "one per process keeps N worker processes from fighting over N cores."
    )

    malloc_keep_mb: int = Field(
        1024, ge=0, le=2047, description="Freed heap memory (MiB) a process doing tensor work keeps for "
        "reuse, with glibc's per-block mmap turned off (core/memory.py): forwards 1.8-3.9x faster on CPU "
        "(scripts/bench_forward.py), the process keeping about the peak of its forwards resident. 0 leaves "
        "glibc's defaults.",
    )

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def artifact_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache
def get_settings() -> Settings:
    return Settings()
