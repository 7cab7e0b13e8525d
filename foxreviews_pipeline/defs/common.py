"""What every definition of the code location shares."""

import warnings

import dagster as dg

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


# Code references (`with_source_code_references`: each asset links to its source in the UI)
# are a beta feature of Dagster 1.13: used knowingly, and their notices silenced likewise.
warnings.filterwarnings(
    "ignore",
    message=r"(Function `with_source_code_references`|Class `LocalFileCodeReference`|"
    r"Class `CodeReferencesMetadataValue`) is currently in beta",
    category=dg.BetaWarning,
)
