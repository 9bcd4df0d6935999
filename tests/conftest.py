import os
import tempfile

import pytest
from hypothesis import configuration, settings

# Tests write nothing in the checkout: hypothesis keeps its example database and its caches in a
# .hypothesis/ folder of the working directory pytest starts in, so the database is off and the
# caches go to a temporary folder.
settings.register_profile("genzoo", database=None)
settings.load_profile("genzoo")
configuration.set_hypothesis_home_dir(tempfile.mkdtemp(prefix="genzoo-hypothesis-"))


def pytest_configure(config):
    # For the whole session, collection included (some test modules list the registry to
    # parametrize): no third-party plugin from the environment (GENZOO_LOAD_PLUGINS empty keeps
    # every entry point out, built-ins still load; the plugin tests opt in with
    # `third_party_plugins`), and never the user's data cache.
    mp = pytest.MonkeyPatch()
    mp.setenv("GENZOO_LOAD_PLUGINS", "")
    if "GENZOO_DATA" not in os.environ:
        mp.setenv("GENZOO_DATA", os.path.join(os.path.dirname(__file__), ".data-cache-unused"))
    config.add_cleanup(mp.undo)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # default run folders (runs/NAME-TIME) and any relative output land in tmp_path, never in
    # the checkout
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path / "data-root"))
    monkeypatch.setenv("GENZOO_LOAD_PLUGINS", "")
    monkeypatch.delenv("GENZOO_STRICT_PLUGINS", raising=False)
    yield
    from genzoo.core import registry
    registry.reset()


@pytest.fixture
def third_party_plugins(_isolated, monkeypatch):
    """Opt in to entry-point plugins (installed ones, and any a test installs), in this process
    and in the `zoo` subprocesses it starts."""
    from genzoo.core import registry
    monkeypatch.delenv("GENZOO_LOAD_PLUGINS", raising=False)
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def tiny():
    """tiny(name, steps=None, **extra) -> overrides for a seconds-long run (tests/tiny.py)."""
    from tiny import tiny as make
    return make
