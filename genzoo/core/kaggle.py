"""Kaggle datasets: find credentials, download once, cache behind a `.complete` marker.

Only the stdlib is imported here; the `kaggle` client (heavy, and noisy at import time) is
imported only when a download really has to happen, so a cache hit works offline and without
credentials.

How the client is imported (kaggle 2.2.x, read from its source): `kaggle/__init__.py` builds a
`KaggleApi` and authenticates at import time, swallowing errors but printing help text, and
importing `kaggle.api.kaggle_api_extended` runs that `__init__` too, so the side effect cannot be
avoided. We therefore import it and call `KaggleApi().authenticate()` with the credentials'
env vars temporarily set and stdout/stderr captured; `authenticate()` calls `exit(1)` when
Kaggle accepts none of them, which becomes a `CredentialsError` (older versions exited
during the import itself; that is caught the same way).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from genzoo.errors import CredentialsError, DataError, GenzooError

SETTINGS_URL = "https://www.kaggle.com/settings"
MARKER = ".complete"
_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclass(frozen=True)
class KaggleCredentials:
    """Where the credentials came from matters as much as what they are: error messages cite it."""

    username: str | None
    key: str | None = field(repr=False)
    token: str | None = field(repr=False)
    origin: str

    def env(self) -> dict[str, str]:
        """The env vars the kaggle client reads; it has no other way to be handed credentials."""
        if self.token:
            return {"KAGGLE_API_TOKEN": self.token}
        return {"KAGGLE_USERNAME": self.username or "", "KAGGLE_KEY": self.key or ""}


def _from_mapping(values: Mapping[str, str | None], origin_token: str, origin_pair: str) -> KaggleCredentials | None:
    token = (values.get("KAGGLE_API_TOKEN") or "").strip()
    if token:
        return KaggleCredentials(None, None, token, origin_token)
    user = (values.get("KAGGLE_USERNAME") or "").strip()
    key = (values.get("KAGGLE_KEY") or "").strip()
    if user and key:
        return KaggleCredentials(user, key, None, origin_pair)
    return None


def _read_dotenv(path: Path) -> dict[str, str | None]:
    try:
        from dotenv import dotenv_values  # lazy: keep this module stdlib-only at import
    except ImportError:  # python-dotenv missing: a plain KEY=VALUE reader covers the common case
        out: dict[str, str | None] = {}
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line.startswith("export "):
                line = line[len("export "):]
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip().strip("'\"")
        return out
    return dict(dotenv_values(path))


def _missing_message(env: Mapping[str, str]) -> str:
    msg = (
        "no Kaggle credentials were found; create an API token at "
        f"{SETTINGS_URL} and either export KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY), "
        "put those variables in a .env file in the current directory, "
        "save the token in ~/.kaggle/access_token, "
        'or save {"username": ..., "key": ...} in ~/.kaggle/kaggle.json'
    )
    partial = [v for v in ("KAGGLE_USERNAME", "KAGGLE_KEY") if env.get(v)]
    if len(partial) == 1:
        other = "KAGGLE_KEY" if partial[0] == "KAGGLE_USERNAME" else "KAGGLE_USERNAME"
        msg += f" ({partial[0]} is set but {other} is not)"
    return msg


def find_credentials(
    env: Mapping[str, str] | None = None, home: Path | None = None, cwd: Path | None = None
) -> KaggleCredentials:
    """Look where users actually keep Kaggle credentials, env first so it can override files.

    Order: KAGGLE_API_TOKEN; KAGGLE_USERNAME+KAGGLE_KEY; ./.env holding either; then
    $KAGGLE_CONFIG_DIR (or ~/.kaggle) /access_token, then /kaggle.json.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else Path(home)
    cwd = Path.cwd() if cwd is None else Path(cwd)

    found = _from_mapping(
        env, "KAGGLE_API_TOKEN environment variable", "KAGGLE_USERNAME/KAGGLE_KEY environment variables"
    )
    if found:
        return found

    dotenv_path = cwd / ".env"
    if dotenv_path.is_file():
        try:
            values = _read_dotenv(dotenv_path)
        except (OSError, UnicodeError) as e:
            raise CredentialsError(f"could not read {dotenv_path}: {e}") from None
        found = _from_mapping(values, str(dotenv_path), str(dotenv_path))
        if found:
            return found

    config_dir = Path(env["KAGGLE_CONFIG_DIR"]).expanduser() if env.get("KAGGLE_CONFIG_DIR") else home / ".kaggle"

    token_path = config_dir / "access_token"
    if token_path.is_file():
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as e:
            raise CredentialsError(f"could not read Kaggle token {token_path}: {e}") from None
        if token:
            return KaggleCredentials(None, None, token, str(token_path))

    json_path = config_dir / "kaggle.json"
    if json_path.is_file():
        bad = (
            f'malformed Kaggle credentials file {json_path}: expected {{"username": "...", "key": "..."}}; '
            f"download a fresh one from {SETTINGS_URL}"
        )
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeError, ValueError):
            raise CredentialsError(bad) from None
        if not isinstance(data, dict):
            raise CredentialsError(bad)
        user, key = data.get("username"), data.get("key")
        if not (isinstance(user, str) and user.strip() and isinstance(key, str) and key.strip()):
            raise CredentialsError(bad)
        return KaggleCredentials(user.strip(), key.strip(), None, str(json_path))

    raise CredentialsError(_missing_message(env))


def _check_slug(slug: str) -> None:
    if not isinstance(slug, str) or not _SLUG_RE.match(slug):
        raise DataError(f"bad Kaggle dataset slug {slug!r}: expected 'owner/name', e.g. 'zalando-research/fashionmnist'")


def dataset_dir(slug: str, root: Path) -> Path:
    """One flat folder per dataset, so two owners' same-named datasets never collide."""
    _check_slug(slug)
    return Path(root) / "kaggle" / slug.replace("/", "__")


# ---------------------------------------------------------------------------------------------
# Archives


def _check_member(name: str, archive: Path) -> None:
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or name.startswith(("/", "\\")) or ".." in win.parts:
        raise DataError(f"refusing to extract {archive}: member {name!r} would land outside the target folder")


def _merge_into(src: Path, dest: Path) -> None:
    """Move src's entries into dest, replacing clashes; lets several archives fill one folder."""
    for entry in src.iterdir():
        target = dest / entry.name
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            _merge_into(entry, target)
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpack a .zip or .tar(.gz/.bz2/.xz) safely: no member may escape `dest`, and a crash
    mid-way leaves only a hidden temp folder, never a half-filled `dest`."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        with open(archive, "rb") as f:
            magic = f.read(4)
        # a cut or damaged zip has no readable directory, so is_zipfile says no: it is corrupt,
        # not "unsupported", when it is named .zip or starts like one
        if zipfile.is_zipfile(archive) or archive.suffix.lower() == ".zip" or magic == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(archive) as zf:
                    for name in zf.namelist():
                        _check_member(name, archive)
                    zf.extractall(tmp)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise DataError(f"corrupt zip archive {archive} ({e}); delete it and download again") from None
        elif archive.name.lower().endswith(_TAR_SUFFIXES) or tarfile.is_tarfile(archive):
            try:
                with tarfile.open(archive) as tf:
                    for member in tf.getmembers():
                        _check_member(member.name, archive)
                    tf.extractall(tmp, filter="data")
            except tarfile.FilterError as e:
                raise DataError(f"refusing to extract {archive}: {e}") from None
            except (tarfile.TarError, EOFError) as e:
                raise DataError(f"corrupt tar archive {archive} ({e}); delete it and download again") from None
        else:
            raise DataError(f"unsupported archive {archive}: expected .zip or .tar(.gz/.bz2/.xz)")
        if dest.exists():
            _merge_into(tmp, dest)
        else:
            os.replace(tmp, dest)
    except OSError as e:
        raise DataError(f"could not extract {archive} into {dest} ({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Download


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or repr(e)
    # requests buries the useful part ("[Errno -2] Name or service not known") in a long repr
    errno = re.search(r"\[Errno -?\d+\] [^)\"'\]]+", text)
    if errno:
        host = re.search(r"host='([^']+)'", text)
        text = (f"{host.group(1)}: " if host else "") + errno.group(0).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _download_error(slug: str, dest: Path, e: BaseException, creds: KaggleCredentials | None) -> DataError:
    status = getattr(getattr(e, "response", None), "status_code", None) or getattr(e, "status", None)
    if status in (401, 403):
        origin = creds.origin if creds else "your credentials"
        why = f"Kaggle refused access; check the credentials from {origin} and accept the dataset's terms on its page."
    elif status == 404:
        why = "no such dataset? Check the slug."
    else:
        why = "are you offline?"
    return DataError(
        f"could not download Kaggle dataset {slug} ({type(e).__name__}: {_short(e)}); {why} "
        f"Download it by hand from https://www.kaggle.com/datasets/{slug} and unzip it into {dest}, "
        f"then touch {dest / MARKER}"
    )


def _real_api(slug: str, dest: Path, creds: KaggleCredentials) -> Any:
    """Import kaggle and authenticate, turning its exit(1)/help-text into one-line errors."""
    noise = io.StringIO()
    try:
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except SystemExit:
        raise CredentialsError(
            f"Kaggle did not accept the credentials from {creds.origin}; create a new API token at {SETTINGS_URL}"
        ) from None
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "kaggle":
            raise DataError("the 'kaggle' package is not installed; run: pip install kaggle") from None
        raise DataError(f"the 'kaggle' package is broken ({type(e).__name__}: {_short(e)})") from None
    except GenzooError:
        raise
    except Exception as e:  # token introspection hits the network during authenticate()
        raise _download_error(slug, dest, e, creds) from e
    return api


def _write_marker(dest: Path, slug: str) -> None:
    tmp = dest / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"slug": slug}) + "\n", encoding="utf-8")
    os.replace(tmp, dest / MARKER)


def download(slug: str, root: Path, *, force: bool = False, api_factory: Callable[[], Any] | None = None) -> Path:
    """Fetch a Kaggle dataset once; later calls are free and offline (no credentials, no kaggle import).

    The folder is marked complete only after everything is in place, so an interrupted download
    is retried rather than trusted. `api_factory` stands in for the real client in tests.
    """
    dest = dataset_dir(slug, root)
    if not force and (dest / MARKER).is_file():
        return dest

    creds = find_credentials()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=dest.parent))
    try:
        with _patched_environ(creds.env()):
            api = api_factory() if api_factory is not None else _real_api(slug, dest, creds)
            raw = work / "raw"
            raw.mkdir()
            try:
                api.dataset_download_files(slug, path=str(raw), unzip=False, quiet=False)
            except GenzooError:
                raise
            except (Exception, SystemExit) as e:  # requests/urllib3/ApiException/OSError: all "network"
                raise _download_error(slug, dest, e, creds) from e

        files = sorted(p for p in raw.rglob("*") if p.is_file())
        if not files:
            raise DataError(
                f"Kaggle returned no files for dataset {slug}; download it by hand from "
                f"https://www.kaggle.com/datasets/{slug} and unzip it into {dest}, then touch {dest / MARKER}"
            )
        staged = work / "data"
        staged.mkdir()
        for f in files:
            if f.suffix.lower() == ".zip":
                extract_archive(f, staged)
            else:  # a dataset of one file may arrive unzipped
                target = staged / f.relative_to(raw)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)

        # Swap in the new tree; the marker goes last so a crash here means "not complete".
        with contextlib.suppress(FileNotFoundError):
            (dest / MARKER).unlink()
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staged, dest)
        _write_marker(dest, slug)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
