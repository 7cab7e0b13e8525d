"""The one place that reads the environment.

Every setting (README, "Configuration") is read and validated here, once, so that a wrong value fails at
start-up with a message naming the variable instead of deep inside a run.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

SOURCES = ("sample", "api", "stock")
DEFAULT_SOURCE = "sample"
DEFAULT_INSEE_BASE_URL = "https://api.insee.fr/api-sirene/3.11"
# INSEE's quota per key (requests per minute).
DEFAULT_REQUESTS_PER_MINUTE = 30
# About the size of a real day of SIRENE changes.
DEFAULT_SAMPLE_SIZE = 35_000
DEFAULT_RAW_RETENTION_DAYS = 30
# Rows of the change feed (docs/change-feed.md) older than this many days are purged.
DEFAULT_CHANGE_RETENTION_DAYS = 30
# How long a run waits for a concurrency-pool slot (e.g. `insee_api`) held by another run
# before giving up; a healthy holder keeps it for minutes.
DEFAULT_POOL_WAIT_TIMEOUT_S = 1800
# The first daily SIRENE partition: the platform's first day in production. Earlier history
# comes from a StockEtablissement backfill (one job, not one run per day), so older daily
# partitions would only show as "missing" days nobody will fill. A fixed date rather than a
# rolling window: partitions never disappear from the UI as the window moves.
DEFAULT_PARTITIONS_START = date(2026, 11, 1)
DEFAULT_INSEE_RETRY_BUDGET_S = 900
DEFAULT_UPLOAD_QUIET_SECONDS = 60.0
# INSEE's switch of APE codes to NAF 2025 (décret n° 2025-736).
DEFAULT_SAMPLE_NAF2025_FROM = date(2027, 1, 1)
# The webserver's address as operators open it: alerts link to a run's page under it.
DEFAULT_UI_URL = "http://127.0.0.1:3000"

# The source checkout, the folder holding pyproject.toml (an editable install runs from it).
# Only the tests and scripts, which run from a checkout, use it; the package's own files
# (migrations, reference data, the instance template) are package data, read through
# importlib.resources, and the running platform asks `project_folder()`.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_folder() -> Path:
    """The folder of the project's `.env` and default `.foxreviews/` working folder: the
    source checkout when the package runs from one (`scripts/setup.sh` installs it
    editable), otherwise, installed from a wheel, the folder the command starts in (where
    Dagster's own commands read `.env` too)."""
    if (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "foxreviews_pipeline").is_dir():
        return PROJECT_ROOT
    return Path.cwd()


class ConfigurationError(ValueError):
    """A setting has a value the platform cannot work with; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    home: Path
    sirene_source: str
    insee_api_key: str | None
    insee_base_url: str
    insee_requests_per_minute: int
    upload_dir: Path
    stock_path: Path | None
    # Landed raw SIRENE partitions older than this many days (by partition date) are purged.
    raw_retention_days: int = DEFAULT_RAW_RETENTION_DAYS
    # FOXREVIEWS_CHANGE_RETENTION_DAYS: changes of the change feed older than this many days
    # are purged by the weekly cleanup.
    change_retention_days: int = DEFAULT_CHANGE_RETENTION_DAYS
    pool_wait_timeout_s: int = DEFAULT_POOL_WAIT_TIMEOUT_S
    # FOXREVIEWS_INSEE_RETRY_BUDGET_SECONDS: the time a day's fetch may spend on transient
    # INSEE failures and the waits after them (Retry-After included) before it fails.
    insee_retry_budget_s: int = DEFAULT_INSEE_RETRY_BUDGET_S
    # FOXREVIEWS_UPLOAD_QUIET_SECONDS: an uploaded file is taken once it has stayed unchanged
    # this long, across sensor ticks (docs/uploads.md).
    upload_quiet_seconds: float = DEFAULT_UPLOAD_QUIET_SECONDS
    # FOXREVIEWS_PARTITIONS_START: the first daily SIRENE partition.
    partitions_start: date = DEFAULT_PARTITIONS_START
    # FOXREVIEWS_SAMPLE_NAF2025_FROM: from this day the sample source states activities in
    # NAF 2025, as INSEE does from 2027-01-01 (set earlier to see a switch day today).
    sample_naf2025_from: date = DEFAULT_SAMPLE_NAF2025_FROM
    # FOXREVIEWS_ALERT_WEBHOOK_URL: where failed runs and stale assets are announced (a
    # Slack-compatible webhook); unset, nothing is sent. Its path is a credential: only its
    # host is ever shown.
    alert_webhook_url: str | None = None
    # FOXREVIEWS_UI_URL: the webserver's base URL, for the links in alerts.
    ui_url: str = DEFAULT_UI_URL
    # The variables this process's environment states exactly as the settings hold them (the
    # same text): the resources take those by name (`dg.EnvVar`), resolved by Dagster from the
    # same environment and shown as such in the UI. Empty when read from a given mapping.
    verbatim: frozenset[str] = frozenset()

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    def __repr__(self) -> str:  # the API key and the database password stay out of logs
        return (
            f"Settings(database={'embedded' if self.database_url is None else redact_url(self.database_url)}, "
            f"home={self.home}, sirene_source={self.sirene_source!r}, "
            f"insee_api_key={'set' if self.insee_api_key else 'unset'}, "
            f"insee_base_url={self.insee_base_url!r}, "
            f"insee_requests_per_minute={self.insee_requests_per_minute}, "
            f"upload_dir={self.upload_dir}, raw_retention_days={self.raw_retention_days}, "
            f"change_retention_days={self.change_retention_days}, "
            f"pool_wait_timeout_s={self.pool_wait_timeout_s}, "
            f"insee_retry_budget_s={self.insee_retry_budget_s}, "
            f"upload_quiet_seconds={self.upload_quiet_seconds:g}, "
            f"partitions_start={self.partitions_start.isoformat()}, "
            f"sample_naf2025_from={self.sample_naf2025_from.isoformat()}, "
            f"alert_webhook={_webhook_shown(self.alert_webhook_url)}, ui_url={self.ui_url!r})"
        )


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _validate_database_url(value: str) -> str:
    parts = urlsplit(value)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"FOXREVIEWS_DATABASE_URL must be a postgresql:// URL, got scheme {parts.scheme!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ConfigurationError(f"FOXREVIEWS_DATABASE_URL has a malformed port: {exc}") from None
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise ConfigurationError(
            "FOXREVIEWS_DATABASE_URL must name a database, e.g. postgresql://user@host:5432/foxreviews"
        )
    return value


def _usable_folder(name: str, path: Path) -> Path:
    """A folder the platform can write in, or one it can create (nothing is created here)."""
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"{name} must be a folder, but {path} is a file")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(f"{name} cannot be created: {existing} is a file")
    try:  # os.access would say yes to root on a read-only file system
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise ConfigurationError(f"{name} {what}: {path} ({exc.strerror})") from None
    return path


def _validate_http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _webhook_shown(url: str | None) -> str:
    """What may be shown of the alert webhook: its host (the path is its credential)."""
    return "unset" if url is None else f"set (host {urlsplit(url).hostname})"


def _validate_webhook_url(name: str, value: str) -> str:
    """An http(s) URL with a host; the message never repeats the value (a credential)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{name} must be an http(s) URL such as https://hooks.slack.com/services/…"
        )
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    project = project_folder()
    home = Path(get("FOXREVIEWS_HOME") or project / ".foxreviews").expanduser()
    if not home.is_absolute():
        home = (project / home).resolve()

    database_url = get("FOXREVIEWS_DATABASE_URL")
    if database_url is not None:
        database_url = _validate_database_url(database_url)

    source = (get("FOXREVIEWS_SIRENE_SOURCE") or DEFAULT_SOURCE).lower()
    if source not in SOURCES:
        raise ConfigurationError(
            f"FOXREVIEWS_SIRENE_SOURCE must be one of {', '.join(SOURCES)}, got {source!r}"
        )

    api_key = get("FOXREVIEWS_INSEE_API_KEY")
    if source == "api" and api_key is None:
        raise ConfigurationError(
            "FOXREVIEWS_INSEE_API_KEY is required when FOXREVIEWS_SIRENE_SOURCE=api "
            "(get a key on portail-api.insee.fr)"
        )

    base_url = _validate_http_url(
        "FOXREVIEWS_INSEE_BASE_URL", get("FOXREVIEWS_INSEE_BASE_URL") or DEFAULT_INSEE_BASE_URL
    )

    rpm_raw = get("FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE") or str(DEFAULT_REQUESTS_PER_MINUTE)
    try:
        rpm = int(rpm_raw)
    except ValueError:
        rpm = 0
    if not 1 <= rpm <= 10_000:
        raise ConfigurationError(
            f"FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE must be a whole number from 1 to 10000, got {rpm_raw!r}"
        )

    upload_raw = get("FOXREVIEWS_UPLOAD_DIR")
    upload_dir = Path(upload_raw).expanduser() if upload_raw else home / "uploads"
    if not upload_dir.is_absolute():
        upload_dir = (project / upload_dir).resolve()

    stock_raw = get("FOXREVIEWS_SIRENE_STOCK_PATH")
    stock_path = Path(stock_raw).expanduser() if stock_raw else None
    if source == "stock":
        if stock_path is None:
            raise ConfigurationError(
                "FOXREVIEWS_SIRENE_STOCK_PATH is required when FOXREVIEWS_SIRENE_SOURCE=stock "
                "(a StockEtablissement .zip, .csv or .parquet file)"
            )
        if not stock_path.is_file():
            state = "is not a file" if stock_path.exists() else "does not exist"
            raise ConfigurationError(f"FOXREVIEWS_SIRENE_STOCK_PATH {state}: {stock_path}")

    _usable_folder("FOXREVIEWS_HOME", home)
    _usable_folder("FOXREVIEWS_UPLOAD_DIR", upload_dir)

    raw_retention_days = int(_number_setting(
        get("FOXREVIEWS_RAW_RETENTION_DAYS"), "FOXREVIEWS_RAW_RETENTION_DAYS",
        DEFAULT_RAW_RETENTION_DAYS, 1, 3650, "days",
    ))
    change_retention_days = int(_number_setting(
        get("FOXREVIEWS_CHANGE_RETENTION_DAYS"), "FOXREVIEWS_CHANGE_RETENTION_DAYS",
        DEFAULT_CHANGE_RETENTION_DAYS, 1, 3650, "days",
    ))
    pool_wait_timeout_s = int(_number_setting(
        get("FOXREVIEWS_POOL_WAIT_TIMEOUT_SECONDS"), "FOXREVIEWS_POOL_WAIT_TIMEOUT_SECONDS",
        DEFAULT_POOL_WAIT_TIMEOUT_S, 1, 86_400, "seconds",
    ))
    insee_retry_budget_s = int(_number_setting(
        get("FOXREVIEWS_INSEE_RETRY_BUDGET_SECONDS"), "FOXREVIEWS_INSEE_RETRY_BUDGET_SECONDS",
        DEFAULT_INSEE_RETRY_BUDGET_S, 0, 86_400, "seconds",
    ))
    upload_quiet_seconds = _number_setting(
        get("FOXREVIEWS_UPLOAD_QUIET_SECONDS"), "FOXREVIEWS_UPLOAD_QUIET_SECONDS",
        DEFAULT_UPLOAD_QUIET_SECONDS, 0, 86_400, "seconds", whole=False,
    )

    settings = Settings(
        partitions_start=_date_setting(env, "FOXREVIEWS_PARTITIONS_START", DEFAULT_PARTITIONS_START),
        upload_quiet_seconds=upload_quiet_seconds,
        insee_retry_budget_s=insee_retry_budget_s,
        sample_naf2025_from=_date_setting(
            env, "FOXREVIEWS_SAMPLE_NAF2025_FROM", DEFAULT_SAMPLE_NAF2025_FROM
        ),
        database_url=database_url,
        home=home,
        sirene_source=source,
        insee_api_key=api_key,
        insee_base_url=base_url,
        insee_requests_per_minute=rpm,
        upload_dir=upload_dir,
        stock_path=stock_path,
        raw_retention_days=raw_retention_days,
        change_retention_days=change_retention_days,
        pool_wait_timeout_s=pool_wait_timeout_s,
        alert_webhook_url=(
            _validate_webhook_url("FOXREVIEWS_ALERT_WEBHOOK_URL", webhook)
            if (webhook := get("FOXREVIEWS_ALERT_WEBHOOK_URL")) else None
        ),
        ui_url=_validate_http_url("FOXREVIEWS_UI_URL", get("FOXREVIEWS_UI_URL") or DEFAULT_UI_URL),
    )
    if env is not os.environ:  # Dagster resolves an EnvVar from the process's environment
        return settings
    verbatim = frozenset(
        name for name, text in _as_text(settings).items() if text is not None and env.get(name) == text
    )
    return replace(settings, verbatim=verbatim)


def _as_text(settings: Settings) -> dict[str, str | None]:
    """Each variable's setting, written as the variable states it."""
    return {
        "FOXREVIEWS_DATABASE_URL": settings.database_url,
        "FOXREVIEWS_HOME": str(settings.home),
        "FOXREVIEWS_SIRENE_SOURCE": settings.sirene_source,
        "FOXREVIEWS_INSEE_API_KEY": settings.insee_api_key,
        "FOXREVIEWS_INSEE_BASE_URL": settings.insee_base_url,
        "FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE": str(settings.insee_requests_per_minute),
        "FOXREVIEWS_UPLOAD_DIR": str(settings.upload_dir),
        "FOXREVIEWS_SIRENE_STOCK_PATH": str(settings.stock_path) if settings.stock_path else None,
        "FOXREVIEWS_RAW_RETENTION_DAYS": str(settings.raw_retention_days),
        "FOXREVIEWS_CHANGE_RETENTION_DAYS": str(settings.change_retention_days),
        "FOXREVIEWS_POOL_WAIT_TIMEOUT_SECONDS": str(settings.pool_wait_timeout_s),
        "FOXREVIEWS_INSEE_RETRY_BUDGET_SECONDS": str(settings.insee_retry_budget_s),
        "FOXREVIEWS_PARTITIONS_START": settings.partitions_start.isoformat(),
        "FOXREVIEWS_SAMPLE_NAF2025_FROM": settings.sample_naf2025_from.isoformat(),
        "FOXREVIEWS_ALERT_WEBHOOK_URL": settings.alert_webhook_url,
        "FOXREVIEWS_UI_URL": settings.ui_url,
    }


def _number_setting(
    raw: str | None, name: str, default: float, low: float, high: float, unit: str,
    *, whole: bool = True,
) -> float:
    """A number of `unit` from `low` to `high` (whole unless `whole` is false), or `default`
    when unset; anything else names the variable."""
    text = raw if raw is not None else str(default)
    try:
        value = float(int(text)) if whole else float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise ConfigurationError(f"{name} must be {kind} of {unit} from {low:g} to {high:g}, got {text!r}")
    return value


def _date_setting(env: Mapping[str, str], name: str, default: date) -> date:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or len(raw) != 10 or not date(2000, 1, 1) <= value <= date(2100, 1, 1):
        raise ConfigurationError(f"{name} must be a date YYYY-MM-DD from 2000 on, got {raw!r}")
    return value


def load_dotenv_file() -> None:
    """Apply the project folder's `.env` (never overriding the real environment)."""
    from dotenv import load_dotenv

    load_dotenv(project_folder() / ".env", override=False)
