"""The ``decoder`` fixture: run a test module once per decoding path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ief_jobs import codec


@pytest.fixture(name="decoder", params=["pure", "msgspec"], autouse=True)
def _decoder(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test of a module that imports this runs on the pure and the compiled
    path: the two are held to the same answers."""
    compiled = None
    if request.param == "msgspec":
        compiled = pytest.importorskip("ief_jobs._compiled")  # the `fast` extra
    before = codec._compiled
    codec._use(compiled)
    yield request.param
    codec._use(before)
