"""The harness's national projection: the load's rate per row scaled to the national files,
as the machine ran and at the reference speed."""

import pytest

from benchmarks.run_benchmark import (
    NATIONAL_ROWS,
    REFERENCE_COPY_S_PER_MILLION,
    national_projection,
)


def test_at_the_reference_speed_both_projections_agree() -> None:
    minutes, at_reference = national_projection(20.0, REFERENCE_COPY_S_PER_MILLION, 1_000_000)
    assert minutes == pytest.approx(20.0 * NATIONAL_ROWS / 1_000_000 / 60)
    assert at_reference == pytest.approx(minutes)


def test_a_machine_twice_slower_than_the_reference_halves_the_projection_at_reference() -> None:
    # A 4M file, its COPY and its load both twice as slow as on the reference day.
    copy_s = 2 * REFERENCE_COPY_S_PER_MILLION * 4
    minutes, at_reference = national_projection(160.0, copy_s, 4_000_000)
    assert minutes == pytest.approx(160.0 / 4 * 40 / 60)
    assert at_reference == pytest.approx(minutes / 2)
