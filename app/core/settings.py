"""Process settings. Environment variables (prefix ``ROBUSTDX_``) are read here and only here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_ADMIN_KEY = "dev-admin-key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBUSTDX_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; a SQLite file in data_dir when unset."
    )
    auto_upgrade_database: bool | None = Field(
        default=None,
        description="Upgrade the schema at start; unset: only the embedded SQLite of data_dir.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Redis URL of the Celery broker; unset means the embedded broker "
        "started by `robustdx run` (its URL is then kept in data_dir/broker-url).",
    )
    admin_key: str = DEV_ADMIN_KEY
    idempotency_ttl_seconds: float = Field(
        default=86400.0, gt=0,
        description="How long an Idempotency-Key's first response is replayed.",
    )
    webhook_allowed_hosts: list[str] = Field(
        default=["*"],
        description="Host patterns webhooks may call (JSON list; '*.hospital.org' style).",
    )
    webhook_allow_private_networks: bool = Field(
        default=False,
        description="Allow webhook hosts that resolve to loopback or private addresses.",
    )
    webhook_backoff_seconds: float = Field(default=5.0, gt=0,
                                           description="First retry delay; doubles each time.")
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    model_check_wall_seconds: float = Field(
        default=60.0, gt=0, description="Wall-time limit of an upload's load and dry run.")
    model_check_cpu_seconds: int = Field(
        default=30, ge=1, description="CPU-time limit of an upload's load and dry run.")
    model_check_memory_bytes: int = Field(
        default=4 * 1024**3, ge=256 * 1024**2,
        description="Memory an upload's check may allocate beyond the loaded libraries.")
    model_check_queue_seconds: float = Field(
        default=30.0, gt=0, description="How long an upload waits for a free check slot.")
    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs report bundles; generated in the "
        "data folder at first use outside production.",
    )

    # The artifact store: data_dir itself by default; with an S3 URL, data_dir is this
    # process's cache of the bucket and machines share nothing but the bucket.
    storage_url: str | None = Field(
        default=None, description="s3://bucket/prefix for S3-compatible object storage."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible server (SeaweedFS, MinIO)."
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_multipart_bytes: int = Field(
        default=64 * 1024**2, ge=5 * 1024**2,
        description="Objects above this size travel in parts of this size (S3's minimum "
        "part is 5 MiB).",
    )
    s3_transfer_threads: int = Field(default=8, ge=1, le=64)
    s3_create_bucket: bool = Field(
        default=False, description="The API creates the bucket at start when it is missing."
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")

    # Upload and decoding limits. Models are large; images are not.
    max_model_bytes: int = 2 * 1024**3
    max_image_bytes: int = 32 * 1024**2
    max_image_pixels: int = 64 * 1024**2
    max_dataset_bytes: int = 4 * 1024**3
    max_dataset_files: int = 200_000
    max_dataset_uncompressed_bytes: int = 16 * 1024**3
    max_files_per_request: int = 64
    dataset_cache_max_bytes: int = Field(
        default=8 * 1024**3, ge=0,
        description="Largest decoded-tensor cache of one dataset for one model input "
        "(float32 images); larger datasets are decoded per shard. 0: no caches.",
    )
    dataset_cache_inputs: int = Field(
        default=3, ge=0, le=16,
        description="Model inputs an import decodes its dataset for ahead of any audit "
        "(the tenant's most recent models whose labels fit).",
    )
    oip_max_request_bytes: int = Field(
        default=64 * 1024**2, ge=1024,
        description="Largest Open Inference Protocol request body (JSON or binary tensors).",
    )

    # Remote models (an Open Inference Protocol endpoint audited with queries only).
    remote_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host patterns remote models may live on (JSON list; '*.hospital.org' "
        "style). Empty: remote models are refused.",
    )
    remote_allow_private_networks: bool = Field(
        default=False,
        description="Allow remote-model hosts that resolve to loopback or private addresses.",
    )
    remote_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    remote_max_batch: int = Field(default=32, ge=1, le=1024,
                                  description="Images per request to a remote model.")
    remote_query_budget: int = Field(default=100_000, ge=1,
                                     description="Images an audit may send (default).")
    remote_max_query_budget: int = Field(default=10_000_000, ge=1)
    remote_query_rate: float = Field(default=100.0, ge=0,
                                     description="Images per second (default; 0 = no cap).")
    remote_max_query_rate: float = Field(default=1000.0, ge=0,
                                         description="Highest rate an audit may ask (0: any).")

    # HTTP surface (each explained in docs/security.md, "HTTP surface").
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token that /metrics requires; unset, /metrics is off (404).",
    )
    max_part_header_bytes: int = Field(
        default=8 * 1024, ge=256, le=1024**2,
        description="Bytes of headers one multipart part may carry.",
    )

    # In-process inference.
    api_workers: int = Field(
        default=1, ge=1, le=64,
        description="API processes (uvicorn workers); each holds its models and batcher.",
    )
    batch_max_size: int = Field(default=32, ge=1, le=4096)
    batch_max_wait_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    model_cache_size: int = Field(default=4, ge=1, le=256)
    inference_threads: int = Field(default=1, ge=1, le=64)
    auth_cache_seconds: float = Field(
        default=2.0, ge=0.0, le=60.0,
        description="How long predict and OIP infer reuse a successful key and model check "
        "(0: check the database on every request).",
    )

    # Fair use (per tenant; see app/core/limits.py and docs/security.md).
    max_audit_cost: int = Field(
        default=50_000_000, ge=1,
        description="Largest estimated audit cost in image-passes (one forward and backward "
        "pass of one image): images x (1 + settings x steps x restarts or queries) + "
        "analyses. 50M is several hours of one GPU on a 224-pixel ResNet.",
    )
    max_active_jobs_per_tenant: int = Field(
        default=4, ge=1, le=10_000, description="Queued + running jobs per tenant."
    )
    active_jobs_retry_after_seconds: float = Field(default=30.0, gt=0, le=3600)
    predict_rate_per_second: float = Field(
        default=200.0, gt=0,
        description="Image forward passes per second per tenant and API process (a smoothed "
        "image costs n0 + n).",
    )
    predict_burst: int = Field(
        default=12_000, ge=1, description="Token-bucket capacity of the predict rate limit."
    )
    max_smoothing_samples: int = Field(
        default=10_000, ge=1, description="n x files per smoothed predict request."
    )
    smoothing_chunk_size: int = Field(
        default=64, ge=1, le=4096,
        description="Noisy copies per turn on the model's lane: other requests run between "
        "a smoothed request's turns.",
    )
    decode_threads_per_tenant: int = Field(
        default=2, ge=1, le=64,
        description="Threads one tenant's predicts may decode images in at once; the rest "
        "of the request thread pool stays for everyone else.",
    )
    model_check_workers: int = Field(
        default=2, ge=1, le=64,
        description="Model uploads checked (loaded and dry-run) at the same time, in their "
        "own executor, never in the request thread pool.",
    )
    max_pending_model_checks: int = Field(
        default=8, ge=1, le=10_000,
        description="Uploads waiting for a check slot; more are refused with 429.",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0, gt=0, le=600,
        description="On SIGTERM, queued inference fails with 503 at once; lane threads get "
        "this long to finish the pass they are running.",
    )

    # Workers.
    worker_queues: str = Field(default="gpu,cpu", description="Queues a worker consumes.")
    torch_threads: int = Field(default=0, ge=0, description="0 keeps torch's default.")

    # Jobs.
    shard_size: int = Field(
        default=0, ge=0, le=100_000,
        description="Images per audit shard; 0 sizes shards from the audit's cost so that "
        "each holds about shard_target_seconds of work.",
    )
    shard_target_seconds: float = Field(
        default=5.0, gt=0, le=3600,
        description="Work per shard when shards are sized from the cost: progress, retry "
        "and cancel move at least this often.",
    )
    job_time_limit_seconds: int = Field(
        default=6 * 3600, ge=60,
        description="Wall time after which a running job is stopped and failed.",
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    stale_after_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Work with no heartbeat for this long is enqueued again.",
    )
    task_time_limit_seconds: int = 6 * 3600
    register_zoo: bool = Field(default=True, description="Register the demo zoo (dev tenant).")
    dev_tenant: str = "dev"
    run_dispatcher: bool = Field(
        default=True, description="Run the dispatcher/watchdog loop in the API process."
    )
    dispatcher_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    dispatcher_lease_seconds: float = Field(
        default=20.0, gt=0, le=3600,
        description="How long the dispatcher lease lasts without renewal; another API "
        "process takes the dispatcher over this long after its holder died.",
    )

    @model_validator(mode="after")
    def _burst_fits_the_largest_request(self) -> Settings:
        # 16: the selection copies (n0) every smoothed image adds to its n counted ones.
        largest = self.max_smoothing_samples + 16 * self.max_files_per_request
        if self.predict_burst < max(largest, self.max_files_per_request):
            raise ValueError(
                f"ROBUSTDX_PREDICT_BURST ({self.predict_burst}) must be at least the largest "
                f"predict the limits allow ({largest} image passes)"
            )
        return self

    # DICOM network (DIMSE port, DICOMweb limits).
    dicom_port: int = Field(default=11112, ge=0, le=65535, description="DIMSE SCP port; 0: off.")
    dicom_host: str = Field(default="0.0.0.0", description="Address the DIMSE SCP binds.")
    dicom_ae_title: str = Field(default="ROBUSTDX", min_length=1, max_length=16)
    max_dicom_instance_bytes: int = Field(default=256 * 1024**2, ge=1024)
    max_stow_instances: int = Field(default=2000, ge=1)
    dicom_route_retries: int = Field(default=3, ge=0, le=20)

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value:
            from app.core.storage.s3 import S3Location

            S3Location.parse(value)
        return value or None

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment == "production" and self.admin_key == DEV_ADMIN_KEY:
            raise ValueError("ROBUSTDX_ADMIN_KEY must be set to a secret in production")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'robustdx.db').resolve()}"

    @property
    def upgrades_database_itself(self) -> bool:
        if self.auto_upgrade_database is not None:
            return self.auto_upgrade_database
        return self.database_url is None

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        stored = self.data_dir / "broker-url"
        if stored.exists():
            return stored.read_text().strip()
        return "redis://127.0.0.1:6379/0"


@lru_cache
def get_settings() -> Settings:
    return Settings()
