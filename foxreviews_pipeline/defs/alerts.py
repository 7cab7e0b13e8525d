"""Alerts: a failed run and an asset turning stale each post one message to the webhook of
FOXREVIEWS_ALERT_WEBHOOK_URL (README, "Alerts").

Two sensors, evaluated by the daemon, running by default:

- `run_failure_alert`: every run that ends FAILURE — a day held back by its blocking checks
  among them — names its job, its partition, the reason (the failed steps' own messages,
  which say "held back, nothing published: blocking check failed: …" for a held-back day;
  else the run's failure message) and the link to the run in the webserver
  (FOXREVIEWS_UI_URL). It watches every run of the instance, including those `foxreviews
  run-day` executes in-process, which belong to no code location.
- `freshness_alert`: each transition of an asset's freshness to FAIL, as the freshness daemon
  records it (a FRESHNESS_STATE_CHANGE event), is announced once: the sensor's cursor is the
  storage id of the last event it handled.

With the variable unset nothing is sent and the sensors say so in their ticks. A receiver
that is down or answers an error costs one warning in the tick's log: the sensor tick and the
run stay as they are, and that alert is not sent again. The URL carries a credential: it goes
into the resource by variable name, and only its host is ever logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeGuard
from urllib.parse import quote

import dagster as dg
from pydantic import Field

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import configured
from foxreviews_pipeline.lib.alerts import DEFAULT_TIMEOUT_S, Logger, post_alert
from foxreviews_pipeline.lib.constants import PARIS
from foxreviews_pipeline.lib.settings import DEFAULT_UI_URL, Settings

WEBHOOK_VARIABLE = "FOXREVIEWS_ALERT_WEBHOOK_URL"
UNSET = f"{WEBHOOK_VARIABLE} is unset: no alert is sent"
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
# Freshness changes read per tick; more wait for the next tick (the cursor says where).
FRESHNESS_BATCH = 200
# A reason is cut to this many characters (the run's page has it in full).
REASON_CHARS = 1500


class AlertWebhook(dg.ConfigurableResource):
    """Where alerts go and the webserver their links lead to."""

    # repr=False: once Dagster has resolved the EnvVar this is the URL with its credential.
    webhook_url: str | None = Field(
        default=None,
        repr=False,
        description="A Slack-compatible incoming webhook (POST of {\"text\": …}); unset, "
        "nothing is sent. Given by variable name: the URL is a credential.",
    )
    ui_url: str = Field(
        default=DEFAULT_UI_URL,
        description="The webserver's base URL, as operators open it: links in alerts.",
    )
    timeout_s: float = Field(
        default=DEFAULT_TIMEOUT_S, gt=0, le=60,
        description="Connection and read deadline of each POST, in seconds.",
    )

    @property
    def url(self) -> str | None:
        return (self.webhook_url or "").strip() or None

    def send(self, text: str, logger: Logger) -> bool:
        url = self.url
        return url is not None and post_alert(url, text, self.timeout_s, logger=logger)

    def link(self, path: str) -> str:
        return f"{self.ui_url.rstrip('/')}/{path.lstrip('/')}"

    def run_link(self, run_id: str) -> str:
        return self.link(f"runs/{run_id}")

    def asset_link(self, key: dg.AssetKey) -> str:
        return self.link("assets/" + "/".join(quote(part, safe="") for part in key.path))


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_CHARS else flat[: REASON_CHARS - 1] + "…"


def _partition(run: dg.DagsterRun) -> str:
    if key := run.tags.get(PARTITION_TAG):
        return key
    start, end = (run.tags.get(tag) for tag in RANGE_TAGS)
    if start and end:
        return start if start == end else f"{start}…{end}"
    return "none"


def _step_reason(event: dg.DagsterEvent) -> str | None:
    data = event.step_failure_data
    if data is None:
        return None
    # A dg.Failure (a held-back day) carries its own one-line description; other errors
    # their message (the exception's class and text).
    user = data.user_failure_data
    text = (user.description if user else None) or (data.error.message if data.error else None)
    if not text:
        return None
    return f"{event.step_key}: {text}" if event.step_key else text


def failure_reason(
    run_failure_message: str | None, step_failures: Sequence[dg.DagsterEvent]
) -> str:
    """Why a run failed, in one line: its failed steps' messages, else the run's own."""
    reasons = list(dict.fromkeys(r for e in step_failures if (r := _step_reason(e))))
    if reasons:
        return _one_line("; ".join(reasons))
    return _one_line(run_failure_message or "the run failed (no message recorded)")


def run_failure_text(run: dg.DagsterRun, reason: str, link: str) -> str:
    return (
        f":red_circle: FoxReviews: run of job `{run.job_name}` failed "
        f"(partition {_partition(run)})\n"
        f"Reason: {reason}\n"
        f"Run: {link}"
    )


@dg.run_failure_sensor(
    name="run_failure_alert",
    minimum_interval_seconds=30,
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: each run that failed (a held-back day among them) posts one "
    "message naming its job, partition, reason and link to FOXREVIEWS_ALERT_WEBHOOK_URL "
    "(nothing when unset). Watches every run of the instance, `foxreviews run-day`'s too.",
)
def run_failure_alert(
    context: dg.RunFailureSensorContext, alert_webhook: AlertWebhook
) -> dg.SkipReason | None:
    run = context.dagster_run
    if alert_webhook.url is None:
        return dg.SkipReason(f"{UNSET} (run {run.run_id} of {run.job_name} failed)")
    reason = failure_reason(context.failure_event.message, context.get_step_failure_events())
    text = run_failure_text(run, reason, alert_webhook.run_link(run.run_id))
    if alert_webhook.send(text, context.log):
        context.log.info(f"alert sent for run {run.run_id} of {run.job_name}")
    # None: the sensor goes on with the next failed run in the same tick (a SkipReason or a
    # request would end the tick), and the failed run gets no note of it.
    return None


class FreshnessChange(Protocol):
    """What a FRESHNESS_STATE_CHANGE event carries (Dagster 1.13 exports no type for it)."""

    key: dg.AssetKey
    new_state: str
    previous_state: str
    state_change_timestamp: float


def _is_freshness_change(data: object) -> TypeGuard[FreshnessChange]:
    return all(
        hasattr(data, name) for name in ("key", "new_state", "previous_state", "state_change_timestamp")
    )


# The states are a `str` enum: a state equals its name.
_FAIL = "FAIL"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, PARIS).strftime("%Y-%m-%d %H:%M %Z")


def freshness_text(
    change: FreshnessChange, last_materialized: float | None, link: str
) -> str:
    last = _when(last_materialized) if last_materialized is not None else "never"
    return (
        f":warning: FoxReviews: asset `{change.key.to_user_string()}` is stale: failing its "
        f"freshness policy since {_when(change.state_change_timestamp)} "
        f"(was {getattr(change.previous_state, 'value', change.previous_state)!s}; "
        f"last materialized: {last})\n"
        f"Asset: {link}"
    )


def _freshness_changes(
    instance: dg.DagsterInstance, after: int | None, limit: int, *, newest_first: bool = False
) -> list[dg.EventLogRecord]:
    records_filter = dg.EventRecordsFilter(
        event_type=dg.DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=after
    )
    # The storage's query (the instance's `get_event_records` is deprecated, and Dagster
    # 1.13 has no `fetch_*` for freshness changes).
    return list(
        instance.event_log_storage.get_event_records(
            records_filter, limit=limit, ascending=not newest_first
        )
    )


@dg.sensor(
    name="freshness_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    owners=OWNERS,
    description="Every minute: each asset whose freshness turned FAIL (stale) since the last "
    "tick posts one message naming it and since when to FOXREVIEWS_ALERT_WEBHOOK_URL "
    "(nothing when unset).",
)
def freshness_alert(
    context: dg.SensorEvaluationContext, alert_webhook: AlertWebhook
) -> dg.SensorResult:
    instance = context.instance
    if context.cursor is None or alert_webhook.url is None:
        # From now on: earlier changes (before the first tick, or while nothing was to be
        # sent) are not announced afterwards.
        latest = _freshness_changes(instance, None, 1, newest_first=True)
        cursor = str(latest[0].storage_id if latest else -1)
        reason = UNSET if alert_webhook.url is None else "started: watching freshness changes from now on"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)

    after = int(context.cursor)
    records = _freshness_changes(instance, after, FRESHNESS_BATCH)
    announced: list[str] = []
    unsent: list[str] = []
    for record in records:
        after = record.storage_id
        event = record.event_log_entry.dagster_event
        change = event.event_specific_data if event else None
        if not _is_freshness_change(change):
            continue
        if change.new_state != _FAIL or change.previous_state == _FAIL:
            continue
        materialized = instance.get_latest_materialization_event(change.key)
        text = freshness_text(
            change,
            materialized.timestamp if materialized else None,
            alert_webhook.asset_link(change.key),
        )
        name = change.key.to_user_string()
        if alert_webhook.send(text, context.log):
            announced.append(name)
            context.log.info(f"alert sent: {name} stale")
        else:
            unsent.append(name)
    reasons = []
    if announced:
        reasons.append(f"stale, alert sent: {', '.join(announced)}")
    if unsent:
        reasons.append(f"stale, alert not sent (see the tick's log): {', '.join(unsent)}")
    if not reasons:
        reasons.append(
            f"{len(records)} freshness change(s), none to FAIL" if records else "no freshness change"
        )
    reason = "; ".join(reasons)
    return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=str(after))


def alert_webhook(settings: Settings) -> AlertWebhook:
    """The resource under `settings`: the webhook by variable name (a credential, never shown
    in the UI), the webserver's URL as the environment states it."""
    return AlertWebhook(
        webhook_url=dg.EnvVar(WEBHOOK_VARIABLE) if settings.alert_webhook_url else None,
        ui_url=configured(settings, "FOXREVIEWS_UI_URL", settings.ui_url),
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        sensors=[run_failure_alert, freshness_alert],
        resources={"alert_webhook": alert_webhook(settings)},
    )
