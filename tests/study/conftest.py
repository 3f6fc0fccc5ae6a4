"""Fixtures shared by the study tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray for the tests of one module (started as studies start it), shut down after them."""
    import ray

    from study.runner import init_ray

    init_ray(None)
    yield
    ray.shutdown()
