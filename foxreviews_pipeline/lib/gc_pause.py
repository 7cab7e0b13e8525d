"""Pausing Python's cyclic garbage collector while building large acyclic structures.

Parsing a landed day creates millions of small dicts and strings, none of them in cycles;
the collector would walk the growing heap again and again for nothing (about a fifth of
the parse time).
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
