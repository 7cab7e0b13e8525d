"""The code location: every asset, check, job, schedule, sensor and resource of the platform.

Importing this module reads nothing: `defs` is a `@dg.definitions` function, which Dagster
calls when it loads the code location (`dg dev`, `dg launch`, the code server, the daemon,
each run). It reads and validates the settings then, so a wrong environment variable stops
them at start-up with a message naming it. The project's `.env` is read by the Dagster
command (every `dg`/`dagster` command loads the `.env` of the folder it starts in) or by
`foxreviews`, never here. Each call reads the environment afresh: a test sets its variables,
then calls `defs()`.
"""

import sys

import dagster as dg

from foxreviews_pipeline.defs import alerts, tables
from foxreviews_pipeline.defs.directory import definitions as directory
from foxreviews_pipeline.defs.maintenance import definitions as maintenance
from foxreviews_pipeline.defs.reference import definitions as reference
from foxreviews_pipeline.defs.resources import PostgresResource, build_resources
from foxreviews_pipeline.defs.sirene import definitions as sirene
from foxreviews_pipeline.defs.uploads import definitions as uploads
from foxreviews_pipeline.lib.settings import ConfigurationError, Settings, load_settings
from foxreviews_pipeline.recovery import stoppable_executor


def build_defs(settings: Settings) -> dg.Definitions:
    """The code location under validated `settings` (what `foxreviews run-day` runs)."""
    resources = build_resources(settings)
    postgres = resources["postgres"]
    assert isinstance(postgres, PostgresResource)
    merged = dg.Definitions.merge(
        *(
            domain.build_definitions(settings)
            for domain in (reference, sirene, directory, uploads, maintenance, alerts)
        ),
        # The table I/O manager reads through the location's own `postgres`.
        tables.build_definitions(settings, postgres=postgres),
        # Dagster's default executor, but a run worker stopped by SIGTERM/SIGINT ends its run
        # CANCELED: slots freed, never retried (README, "Stop").
        dg.Definitions(resources=resources, executor=stoppable_executor),
    )
    # Every asset links to the source that computes it (the UI's "code references").
    return dg.Definitions(
        assets=dg.with_source_code_references(list(merged.assets or [])),
        asset_checks=merged.asset_checks,
        jobs=merged.jobs,
        schedules=merged.schedules,
        sensors=merged.sensors,
        resources=merged.resources,
        executor=merged.executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location under the settings of the environment, read now."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        # Dagster's tools print the load error with a stack trace: the first line they show
        # is this one, naming the variable; the error is raised again, alone, without context.
        print(f"foxreviews: {exc}", file=sys.stderr, flush=True)
        raise ConfigurationError(str(exc)) from None
    return build_defs(settings)
