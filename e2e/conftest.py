"""Fixtures of the end-to-end suite: the AWS emulator (signature checking on), the edge
under `wrangler dev` (built beforehand; started without rebuilding), a JWKS server, the
emulator's reader and the backend behind the edge. What they are made of is in
`harness.py`."""

import os
import shutil

import pytest

from harness import LOGS, Backend, Emulator, Jwks, edge_settings, start_edge
from devstack import provision as prov
from devstack import stack


# Every secret handed to an edge or a worker is written here (devstack.stack), so that
# the last test can check that no log holds one (test_secrets.py).
os.environ["SECRETS_RECORD"] = str(LOGS / "secrets.list")


def pytest_sessionstart(session):
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)


def pytest_collection_modifyitems(session, config, items):
    """The check of the logs for secrets runs last, over what every other test wrote."""
    items.sort(key=lambda item: item.path.name == "test_secrets.py")


@pytest.fixture(scope="session")
def aws():
    port = stack.free_port()
    part = stack.start_ministack(port, LOGS / "ministack.log")
    try:
        yield prov.provision(f"http://127.0.0.1:{port}")
    finally:
        part.stop()


@pytest.fixture(scope="session")
def jwks():
    j = Jwks()
    yield j
    j.server.shutdown()


@pytest.fixture(scope="session")
def edge(aws, jwks):
    part, e = start_edge("edge", edge_settings(aws, jwks.url))
    yield e
    part.stop()


@pytest.fixture(scope="session")
def emulator(aws):
    return Emulator(aws)


@pytest.fixture(scope="session")
def backend(aws):
    b = Backend(aws)
    yield b
    b.stop()


