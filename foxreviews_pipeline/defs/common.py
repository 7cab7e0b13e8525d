"""What every definition of the code location shares."""

import warnings

import dagster as dg

from foxreviews_pipeline.lib.directory.checks import PublicationHeld

# Who answers for an asset, job, schedule or sensor; shown in the UI and filterable there.
OWNERS = ["team:data"]

# `owners` of jobs, schedules and sensors is a beta parameter of Dagster 1.13 (assets' is
# stable). Owners are display data, so the platform uses it knowingly; only that one notice
# is silenced, so that every process does not print it at start-up.
warnings.filterwarnings("ignore", message=r"Parameter `owners` of ", category=dg.BetaWarning)

# A check result per upload partition needs `AssetCheckSpec(partitions_def=…)`, a preview
# feature of Dagster 1.13: used knowingly for the uploads' checks, and its notice silenced
# for the same reason as above.
warnings.filterwarnings(
    "ignore", message=r"Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


def held_back(held: PublicationHeld, what: str) -> dg.Failure:
    """The failure of a step whose publication the blocking checks refused: one line naming
    the failed checks, their counts and samples as metadata, no retry (the data is wrong,
    not the moment)."""
    return dg.Failure(
        description=f"{what} {held}",
        metadata={o.label: dg.MetadataValue.json(o.metadata) for o in held.failed},
        allow_retries=False,
    )
