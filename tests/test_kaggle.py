"""Kaggle credentials, download and cache: all offline, with fake API objects where a network would be needed."""
from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from genzoo.core import kaggle as kg
from genzoo.errors import CredentialsError, DataError

SLUG = "someone/tiny-set"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No credentials anywhere: empty env, fresh HOME and cwd (so the real client reads nothing real)."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    return home, cwd


@pytest.fixture
def with_creds(isolated, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    return isolated


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


class FakeApi:
    def __init__(self, members: dict[str, str] | None = None, exc: BaseException | None = None):
        self.members = members or {"tiny/train/data.csv": "x,y\n1,2\n", "README.txt": "hi"}
        self.exc, self.calls, self.seen_env = exc, [], {}

    def dataset_download_files(self, slug, path=None, unzip=False, quiet=True):
        import os

        self.calls.append((slug, path, unzip))
        self.seen_env = {k: v for k, v in os.environ.items() if k.startswith("KAGGLE_")}
        if self.exc is not None:
            raise self.exc
        make_zip(Path(path) / (slug.split("/")[1] + ".zip"), self.members)


# ------------------------------------------------------------------ credentials, in lookup order


def test_env_token_first(tmp_path):
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text('{"username": "f", "key": "k"}')
    env = {"KAGGLE_API_TOKEN": "tok", "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}
    c = kg.find_credentials(env=env, home=tmp_path, cwd=tmp_path)
    assert c.token == "tok" and "KAGGLE_API_TOKEN" in c.origin
    assert c.env() == {"KAGGLE_API_TOKEN": "tok"}
    assert "tok" not in repr(c)


def test_env_username_key(tmp_path):
    (tmp_path / ".env").write_text("KAGGLE_API_TOKEN=fromfile\n")
    c = kg.find_credentials(env={"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home=tmp_path, cwd=tmp_path)
    assert (c.username, c.key, c.token) == ("u", "k", None)
    assert c.origin == "KAGGLE_USERNAME/KAGGLE_KEY environment variables"
    assert c.env() == {"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}


@pytest.mark.parametrize(
    "text, expect",
    [("KAGGLE_USERNAME=u\nKAGGLE_KEY='k'\n", ("u", "k", None)), ("export KAGGLE_API_TOKEN=t\n", (None, None, "t"))],
)
def test_dotenv_in_cwd(tmp_path, monkeypatch, text, expect):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "access_token").write_text("filetok")
    cwd.mkdir()
    (cwd / ".env").write_text(text)
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    c = kg.find_credentials(env={}, home=home, cwd=cwd)
    assert (c.username, c.key, c.token) == expect
    assert c.origin == str(cwd / ".env")
    assert "KAGGLE_USERNAME" not in __import__("os").environ  # .env is read, not loaded


def test_access_token_before_kaggle_json(tmp_path):
    kdir = tmp_path / ".kaggle"
    kdir.mkdir()
    (kdir / "access_token").write_text("  filetok\n")
    (kdir / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    c = kg.find_credentials(env={}, home=tmp_path, cwd=tmp_path)
    assert c.token == "filetok" and c.origin == str(kdir / "access_token")


def test_kaggle_json_and_config_dir(tmp_path):
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text('{"username": "home", "key": "k1"}')
    c = kg.find_credentials(env={}, home=tmp_path, cwd=tmp_path)
    assert (c.username, c.key, c.origin) == ("home", "k1", str(tmp_path / ".kaggle" / "kaggle.json"))

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "kaggle.json").write_text('{"username": "cfg", "key": "k2"}')
    c = kg.find_credentials(env={"KAGGLE_CONFIG_DIR": str(cfg)}, home=tmp_path, cwd=tmp_path)
    assert (c.username, c.origin) == ("cfg", str(cfg / "kaggle.json"))


@pytest.mark.parametrize("text", ["{not json", '["u", "k"]', '{"username": "u"}', '{"username": "u", "key": 3}'])
def test_malformed_kaggle_json(tmp_path, text):
    (tmp_path / ".kaggle").mkdir()
    path = tmp_path / ".kaggle" / "kaggle.json"
    path.write_text(text)
    with pytest.raises(CredentialsError, match="malformed") as ei:
        kg.find_credentials(env={}, home=tmp_path, cwd=tmp_path)
    assert str(path) in str(ei.value)


def test_missing_credentials_message(tmp_path):
    with pytest.raises(CredentialsError) as ei:
        kg.find_credentials(env={"KAGGLE_USERNAME": "u"}, home=tmp_path, cwd=tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg
    for needle in ("no Kaggle credentials", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN", ".env", "access_token",
                   "kaggle.json", "https://www.kaggle.com/settings", "KAGGLE_KEY is not"):
        assert needle in msg


# ------------------------------------------------------------------ slugs and archives


def test_dataset_dir_and_bad_slugs(tmp_path):
    assert kg.dataset_dir("a/b-c", tmp_path) == tmp_path / "kaggle" / "a__b-c"
    for bad in ("noslash", "a/b/c", "../x", "a/..", "/a", "a/", ""):
        with pytest.raises(DataError, match="owner/name"):
            kg.dataset_dir(bad, tmp_path)


@pytest.mark.parametrize("evil", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_zip_escape_rejected(tmp_path, evil):
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": "fine", evil: "pwned"})
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DataError, match="outside"):
        kg.extract_archive(archive, dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # temp extraction dir cleaned up


def _tar(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_tar_extract_and_escape(tmp_path):
    dest = tmp_path / "dest"
    kg.extract_archive(_tar(tmp_path / "good.tar.gz", {"d/a.csv": "1", "b.txt": "2"}), dest)
    assert (dest / "d" / "a.csv").read_text() == "1" and (dest / "b.txt").read_text() == "2"
    # a second archive merges into the same folder
    kg.extract_archive(make_zip(tmp_path / "more.zip", {"d/c.csv": "3"}), dest)
    assert sorted(p.name for p in (dest / "d").iterdir()) == ["a.csv", "c.csv"]
    with pytest.raises(DataError, match="outside"):
        kg.extract_archive(_tar(tmp_path / "bad.tgz", {"../evil": "x"}), tmp_path / "dest2")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "dest2").exists()


def test_not_an_archive(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="unsupported"):
        kg.extract_archive(tmp_path / "x.bin", tmp_path / "d")


# ------------------------------------------------------------------ download with a fake API


def test_download_extracts_and_marks_then_caches(with_creds, tmp_path):
    root = tmp_path / "data"
    api = FakeApi()
    out = kg.download(SLUG, root, api_factory=lambda: api)
    assert out == kg.dataset_dir(SLUG, root)
    assert (out / "tiny" / "train" / "data.csv").read_text() == "x,y\n1,2\n"
    assert (out / "README.txt").read_text() == "hi"
    assert (out / ".complete").is_file()
    assert not list(out.glob("*.zip"))
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp dirs left over
    assert len(api.calls) == 1 and api.calls[0][0] == SLUG and api.calls[0][2] is False
    assert api.seen_env == {"KAGGLE_USERNAME": "alice", "KAGGLE_KEY": "secret"}

    def boom():
        raise AssertionError("cache hit must not build an API")

    assert kg.download(SLUG, root, api_factory=boom) == out

    api2 = FakeApi(members={"new.csv": "z"})
    kg.download(SLUG, root, force=True, api_factory=lambda: api2)
    assert (out / "new.csv").is_file() and not (out / "README.txt").exists() and (out / ".complete").is_file()


def test_cache_hit_needs_no_credentials_nor_kaggle(isolated, tmp_path, monkeypatch):
    root = tmp_path / "data"
    d = kg.dataset_dir(SLUG, root)
    d.mkdir(parents=True)
    (d / ".complete").touch()
    monkeypatch.setitem(sys.modules, "kaggle", None)  # any `import kaggle` would now raise

    def boom():
        raise AssertionError("cache hit must not build an API")

    assert kg.download(SLUG, root, api_factory=boom) == d
    assert kg.download(SLUG, root) == d


def test_offline_download_is_data_error(with_creds, tmp_path):
    root = tmp_path / "data"
    api = FakeApi(exc=ConnectionError("Name or service not known"))
    with pytest.raises(DataError, match="offline") as ei:
        kg.download(SLUG, root, api_factory=lambda: api)
    msg, d = str(ei.value), kg.dataset_dir(SLUG, root)
    assert "\n" not in msg and not isinstance(ei.value, CredentialsError)
    assert "ConnectionError" in msg and f"https://www.kaggle.com/datasets/{SLUG}" in msg and str(d) in msg
    assert not (d / ".complete").exists() and not d.exists()
    assert list(d.parent.iterdir()) == []


def test_bad_zip_from_api_leaves_nothing_complete(with_creds, tmp_path):
    class EvilApi(FakeApi):
        def dataset_download_files(self, slug, path=None, unzip=False, quiet=True):
            make_zip(Path(path) / "x.zip", {"../evil": "x"})

    root = tmp_path / "data"
    with pytest.raises(DataError, match="outside"):
        kg.download(SLUG, root, api_factory=EvilApi)
    assert not kg.dataset_dir(SLUG, root).exists()
    assert not (root / "evil").exists() and not (root / "kaggle" / "evil").exists()


# ------------------------------------------------------------------ the real kaggle client


def test_real_path_without_credentials(isolated, tmp_path):
    with pytest.raises(CredentialsError, match="no Kaggle credentials"):
        kg.download(SLUG, tmp_path / "data")


def test_real_client_offline_fails_cleanly(with_creds, tmp_path):
    """No network here: the real client must end in a one-line DataError, quickly, not hang or exit."""
    root = tmp_path / "data"
    with pytest.raises((DataError, CredentialsError)) as ei:
        kg.download(SLUG, root)
    assert "\n" not in str(ei.value)
    assert not (kg.dataset_dir(SLUG, root) / ".complete").exists()


def test_real_client_token_offline(isolated, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "not-a-real-token")
    with pytest.raises(DataError) as ei:  # token check needs the network; may also be rejected outright
        kg.download(SLUG, tmp_path / "data")
    assert "\n" not in str(ei.value)


def test_real_client_exit_becomes_credentials_error(with_creds, tmp_path, monkeypatch):
    pytest.importorskip("kaggle")
    from kaggle.api.kaggle_api_extended import KaggleApi

    def exits(self):
        print("Authentication required ...")
        exit(1)

    monkeypatch.setattr(KaggleApi, "authenticate", exits)
    with pytest.raises(CredentialsError, match="did not accept") as ei:
        kg.download(SLUG, tmp_path / "data")
    assert "KAGGLE_USERNAME/KAGGLE_KEY" in str(ei.value)


def test_failed_force_redownload_keeps_old_cache(with_creds, tmp_path):
    root = tmp_path / "data"
    out = kg.download(SLUG, root, api_factory=FakeApi)
    with pytest.raises(DataError):
        kg.download(SLUG, root, force=True, api_factory=lambda: FakeApi(exc=OSError("network down")))
    assert (out / ".complete").is_file() and (out / "README.txt").is_file()


def test_http_errors_get_a_better_hint(with_creds, tmp_path):
    class HTTPError(Exception):
        def __init__(self, code):
            super().__init__(f"{code} Client Error")
            self.response = type("R", (), {"status_code": code})()

    for code, hint in ((404, "Check the slug"), (403, "refused access")):
        with pytest.raises(DataError, match=hint):
            kg.download(SLUG, tmp_path / "data", api_factory=lambda: FakeApi(exc=HTTPError(code)))


def test_module_imports_nothing_heavy():
    import subprocess

    code = ("import sys; import genzoo.core.kaggle; "
            "print(sorted(m for m in ('kaggle', 'dotenv', 'torch', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
