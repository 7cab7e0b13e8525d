"""The FoxReviews data platform: a Dagster code location (`foxreviews_pipeline.definitions`)."""

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path


def top_level(name: str) -> Traversable:
    """`sql` or `dagster.yaml`: at the repository's top level in a checkout, where the design
    puts them; inside the package once installed from a wheel, where the build maps them
    (`[tool.hatch.build.targets.wheel.force-include]`)."""
    packaged = files(__name__) / name
    if packaged.is_file() or packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / name
