"""The code location: every asset, check, job, schedule, sensor and resource of the platform.

Settings are validated on import, so a wrong environment variable stops `dg dev`,
`dg launch`, the code server and the daemon at start-up with a message naming it.
Importing this module reads the environment only: the project's `.env` is read by the
Dagster command that imports it (every `dg`/`dagster` command loads the `.env` of the
folder it starts in) or by `foxreviews`, never here.
"""

import sys

import dagster as dg

from foxreviews_pipeline.defs.directory import definitions as directory
from foxreviews_pipeline.defs.maintenance import definitions as maintenance
from foxreviews_pipeline.defs.reference import definitions as reference
from foxreviews_pipeline.defs.resources import build_resources
from foxreviews_pipeline.defs.sirene import definitions as sirene
from foxreviews_pipeline.defs.uploads import definitions as uploads
from foxreviews_pipeline.lib.settings import ConfigurationError, load_settings

try:
    settings = load_settings()
except ConfigurationError as exc:
    # Dagster's tools print the import error with a stack trace: the first line they show
    # is this one, naming the variable; the error is raised again, alone, without context.
    print(f"foxreviews: {exc}", file=sys.stderr, flush=True)
    raise ConfigurationError(str(exc)) from None

defs = dg.Definitions.merge(
    *(
        domain.build_definitions(settings)
        for domain in (reference, sirene, directory, uploads, maintenance)
    ),
    dg.Definitions(resources=build_resources(settings)),
)
