"""Fixtures for tests against a real JupyterHub (tests/hub/harness.py): ``hub`` (one Hub for the
session, default config) and ``hub_factory`` (Hubs with extra config, e.g. a broker service; cached by
their arguments, all stopped at the end of the session). Needs root and ``scripts/hub-env`` (run here
if its results are missing); outside CI, skips with the reason when that cannot be; in CI, fails."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.hub.harness import CHP, ROOT, USERS, VENV, Hub, cleanup, start_hub


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.hub)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the Hub tests run a JupyterHub as root with real Unix users: run them as root (CI does)"
    if not os.access("/usr/bin/python3.11", os.X_OK) and not os.environ.get("CI"):
        return "no /usr/bin/python3.11 (Debian's python3.11) for the Hub venv"
    return None


@pytest.fixture(scope="session")
def hub_env_ready() -> None:
    why = _unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    import pwd

    missing = not (VENV / ".ptcuda-hub-env").exists() or not CHP.exists()
    try:
        for u in USERS:
            pwd.getpwnam(u)
    except KeyError:
        missing = True
    if missing:
        r = subprocess.run([str(ROOT / "scripts" / "hub-env")], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"scripts/hub-env failed:\n{r.stdout}\n{r.stderr}")


@pytest.fixture(scope="session")
def hub_factory(hub_env_ready) -> Iterator[Callable[..., Hub]]:
    """``hub_factory(extra_config="", environment=None, hub_env=None, **kw) -> Hub`` (see
    :func:`tests.hub.harness.start_hub`); the same arguments give the same running Hub."""
    hubs: dict[str, Hub] = {}

    def make(extra_config: str = "", environment: Mapping[str, str] | None = None,
             hub_env: Mapping[str, str] | None = None, **kw) -> Hub:
        key = repr((extra_config, sorted((environment or {}).items()), sorted((hub_env or {}).items()),
                    sorted(kw.items())))
        if key not in hubs:
            hubs[key] = start_hub(extra_config, environment=environment, hub_env=hub_env, **kw)
        return hubs[key]

    yield make
    keep = bool(os.environ.get("PTCUDA_HUB_KEEP"))
    leftovers = []
    for h in hubs.values():
        leftovers += cleanup(h, keep=keep)
    assert not leftovers, f"processes left after the Hub stopped (killed now): {leftovers}"


@pytest.fixture(scope="session")
def hub(hub_factory) -> Hub:
    """The default Hub: users ptcuda-alice and ptcuda-bob, no servers running at first."""
    return hub_factory()
