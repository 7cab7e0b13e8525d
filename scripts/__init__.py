"""Maintainer scripts (regenerating the reference snapshots, setup), importable for their tests."""
