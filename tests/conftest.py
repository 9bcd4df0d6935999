import os

import pytest

# Tests never touch the user's cache or the network's torchvision mirrors.
os.environ.setdefault("GENZOO_DATA", os.path.join(os.path.dirname(__file__), ".data-cache-unused"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # default run folders (runs/NAME-TIME) and any relative output land in tmp_path, never in
    # the checkout
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENZOO_DATA", str(tmp_path / "data-root"))
    monkeypatch.delenv("GENZOO_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("GENZOO_STRICT_PLUGINS", raising=False)
    yield
    from genzoo.core import registry
    registry.reset()


@pytest.fixture
def tiny():
    """tiny(name, steps=None, **extra) -> overrides for a seconds-long run (tests/tiny.py)."""
    from tiny import tiny as make
    return make
