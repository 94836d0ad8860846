"""The time each step of a run takes, measured by the package's own functions, for the run report.

The notebook's cells carry no timing code: a function decorated with `timed("embed")` adds each call's
seconds to `timings["embed"]`, and the run report reads `timings` (and clears it once written).
"""

import functools
import time
from contextlib import contextmanager


class Timings(dict):
    """Seconds per step; `with timings("embed"):` adds the block's time to that step."""

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - started


timings = Timings()  # the steps of the run under way, since the last report was written


def timed(step: str):
    """Decorate a function so that each call's time is added to `timings[step]`."""

    def decorate(function):
        @functools.wraps(function)
        def timed_call(*args, **kwargs):
            with timings(step):
                return function(*args, **kwargs)

        return timed_call

    return decorate
