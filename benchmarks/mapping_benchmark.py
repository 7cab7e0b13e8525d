"""The SIRENE mapping alone, columnar against the per-record rules it replaced (benchmarks/README.md).

    .venv/bin/python benchmarks/mapping_benchmark.py [--rows 1000000] [--stock-file F --unites-legales U]

On a sample stock file (generated, or given), read once into memory, times per 1M rows:
  map_table on the whole table and block by block (as the stock reader yields them);
  the per-record rules (the tests' oracle) on the same rows as tuples;
  records_table + map_table against the per-record rules on the sample day's 35,000 API records.
File reading is not timed. Each figure is the best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import reference_mapping  # noqa: E402
from benchmarks.rows import table_rows  # noqa: E402
from foxreviews_pipeline.lib.sirene.mapping import map_table, records_table  # noqa: E402
from foxreviews_pipeline.lib.sirene.stock_file import iter_stock_batches  # noqa: E402
from foxreviews_pipeline.sample.day import generate_day  # noqa: E402
from foxreviews_pipeline.sample.stock_files import write_sample_stock  # noqa: E402


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stock-file", type=Path)
    parser.add_argument("--unites-legales", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fxmapbench-") as tmp:
        etab, ul = args.stock_file, args.unites_legales
        if etab is None:
            etab, ul = Path(tmp) / "e.csv", Path(tmp) / "ul.csv"
            write_sample_stock(etab, args.rows, unites_legales_path=ul, seed=7)
        batches = list(iter_stock_batches(etab, unites_legales=ul))
    table = pa.Table.from_batches(batches).combine_chunks()
    rows = table_rows(table)
    n = table.num_rows
    per_m = 1_000_000 / n
    print(f"{n:,} stock rows in {len(batches)} blocks; seconds per 1M rows, best of {args.repeat}:")

    figures = {
        "map_table, whole table": best(lambda: map_table(table), args.repeat),
        "map_table, block by block": best(lambda: [map_table(b) for b in batches], args.repeat),
        "per-record rules (before)": best(
            lambda: [reference_mapping.map_flat(r) for r in rows], args.repeat
        ),
    }
    for label, seconds in figures.items():
        print(f"  {label:38s} {seconds * per_m:6.2f} s")

    records = generate_day(date(2026, 11, 20))
    new = best(lambda: map_table(records_table(records)), args.repeat)
    old = best(lambda: [reference_mapping.map_record(r) for r in records], args.repeat)
    print(
        f"{len(records):,} API records (one day): records_table + map_table {new:.3f} s, "
        f"per-record rules {old:.3f} s"
    )


if __name__ == "__main__":
    main()
