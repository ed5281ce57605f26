"""Where shards live: a local path, or a URL that fsspec opens (s3://, gs://, file://, ...).

The readers (contract.shard_reader, contract.dataset_index, training.data) ask this module
about files and folders, so a dataset folder in object storage is read with the same guarantees
as a local one: through its index.json, each shard checked against its entry. Local paths go
through os and pathlib as they always did; URLs through fsspec.

Which strings are URLs: `scheme://...` with a scheme fsspec knows (`s3`, `gs`/`gcs`, `file`,
`memory`, ...), except the schemes webdataset opens itself (`WEBDATASET_SCHEMES`: http(s) with
curl, sftp/scp/ftps, ...), which name single shards and are streamed by webdataset as before, as
are `pipe:` commands and `file:/path` (one slash). A backend's package must be installed: s3fs
ships with this project; gs:// needs gcsfs (the release matching fsspec's).

Storage options are fsspec's, never a setting of this project, so every process (DataLoader
workers, other nodes) finds them the same way, in its environment:
  - the backend's own variables: for S3, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    `AWS_PROFILE`, `AWS_DEFAULT_REGION` and `AWS_ENDPOINT_URL` (an S3-compatible store such as
    MinIO or Ceph), as botocore reads them;
  - fsspec's configuration: `FSSPEC_S3_ENDPOINT_URL=...`, `FSSPEC_S3='{"anon": true}'` (read when
    fsspec is imported) or JSON files in ~/.config/fsspec/ (`FSSPEC_CONFIG_DIR`).
The one variable of this project's own, the bound on retries (`IMAGEDREAM_STORE_ATTEMPTS`,
contract.retry_policy), is read from the environment the same way.

Folders in object storage are prefixes. A URL whose last part ends in `.tar` is taken for a shard
without asking the store (a brace pattern of thousands of shards costs no request at start-up);
any other URL without a glob pattern must be a folder. fsspec caches listings; `forget(folder)` drops that
cache, and `dataset_index.read_index` calls it first, so every index read lists the folder anew.

Writing (the render job's output_dir may be a URL too): `write_bytes` and `open_write` make a
file appear under its name only once it is complete. Locally through a temporary file in the same
folder, fsync and rename; in object storage an object is visible only when its upload completes
(S3 PUT or multipart completion, a GCS upload's finalisation), and a failed `open_write` is never
completed. `file://` URLs are local paths (`resolve`), written the local way: fsspec's local
backend writes in place. Object stores have no append; callers that append (the render job's
ledgers, data_pipeline.job.ledger) write one object per record instead.

Transient failures are retried (S3: contract.retry_policy, which also counts them), so what
reaches a caller is an error that survived its retries.

Errors: every operation on a URL raises OSError (FileNotFoundError for a missing object) naming
the URL, whatever the backend raised (botocore's connection errors are not OSErrors), also while
a shard is being streamed, so callers treat local and remote failures alike; a missing backend
package raises ImportError.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob as local_glob
import hashlib
import io
import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

from contract.atomic import atomic_open
from contract.retry_policy import (
    S3_PROTOCOLS,
    retry_and_count,
    s3_config_kwargs,
    store_attempts,
    store_retries,
)

# Schemes webdataset's own opener handles (curl, commands): shards named by them pass through.
WEBDATASET_SCHEMES = frozenset({"http", "https", "sftp", "ftps", "scp", "ais", "htgs", "hf"})
SHARD_SUFFIX = ".tar"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_CHUNK = 1 << 20


PathLike = str | os.PathLike[str]


def is_url(path: PathLike) -> bool:
    """True for a URL read through fsspec (see the module docstring)."""
    match = _SCHEME.match(os.fspath(path))
    if match is None:
        return False
    scheme = match.group(1).lower()
    return scheme not in WEBDATASET_SCHEMES and scheme in fsspec.available_protocols()


@contextlib.contextmanager
def _as_oserror(url: str) -> Iterator[None]:
    """The backend's exceptions as OSError naming the url (ImportError: a backend is missing)."""
    try:
        yield
    except ImportError:
        raise
    except OSError as exc:
        if url in str(exc):
            raise
        raise _naming(exc, url) from exc
    except Exception as exc:  # botocore, aiohttp, google-auth ... each has its own
        raise OSError(f"{url}: {type(exc).__name__}: {exc}") from exc


_ERRNO = {FileNotFoundError: errno.ENOENT, PermissionError: errno.EACCES,
          FileExistsError: errno.EEXIST}  # fmt: skip


def _naming(exc: OSError, url: str) -> OSError:
    """The same error with the url as its file name (s3fs names `bucket/key`, or nothing)."""
    code = exc.errno if exc.errno is not None else _ERRNO.get(type(exc), errno.EIO)
    text = exc.strerror or str(exc) or os.strerror(code)
    try:
        return type(exc)(code, text, url)
    except Exception:  # a subclass with its own constructor
        return OSError(code, text, url)


def _fs(url: str) -> tuple[Any, str]:
    if fsspec.core.split_protocol(url)[0] not in S3_PROTOCOLS:
        with _as_oserror(url):
            return fsspec.core.url_to_fs(url)
    config_kwargs = s3_config_kwargs()  # a bad setting is a ValueError, not the store's
    with _as_oserror(url):
        fs, path = fsspec.core.url_to_fs(url, config_kwargs=config_kwargs)
        retry_and_count(fs)
        return fs, path


def resolve(path: PathLike) -> Path | str:
    """A local path (also for `file://` URLs) as an absolute Path, a URL as its string without a
    trailing slash: the form the writers below and `join` take."""
    text = os.fspath(path)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://")).expanduser().resolve()
    if is_url(text):
        return text.rstrip("/")
    return Path(text).expanduser().resolve()


def join(folder: PathLike, name: str) -> str:
    if is_url(folder):
        return f"{os.fspath(folder).rstrip('/')}/{name}"
    return str(Path(folder) / name)


def split(path: PathLike) -> tuple[str, str]:
    """(parent folder, name)."""
    if is_url(path):
        parent, _, name = os.fspath(path).rstrip("/").rpartition("/")
        return parent, name
    return os.path.split(os.fspath(path))


def isdir(path: PathLike) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = _fs(os.fspath(path))
    with _as_oserror(os.fspath(path)):
        return bool(fs.isdir(p))


def isfile(path: PathLike) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    fs, p = _fs(os.fspath(path))
    with _as_oserror(os.fspath(path)):
        return bool(fs.isfile(p))


def is_folder(item: PathLike) -> bool:
    """Whether `item` names a folder: a local directory, or a URL without a glob pattern whose
    last part does not end in .tar and that the store lists as a folder."""
    if not is_url(item):
        return os.path.isdir(item)
    text = os.fspath(item)
    if local_glob.has_magic(text) or text.rstrip("/").endswith(SHARD_SUFFIX):
        return False
    return isdir(text)


def forget(folder: PathLike) -> None:
    """Drop fsspec's cached listing of a URL folder, so that what follows sees the store as it is
    now (no-op for local folders)."""
    if is_url(folder):
        fs, p = _fs(os.fspath(folder))
        fs.invalidate_cache(p)


def names(folder: PathLike, pattern: str) -> list[str]:
    """Names of the entries directly in `folder` that match the glob `pattern` (unordered)."""
    if not is_url(folder):
        return [p.name for p in Path(folder).glob(pattern)]
    url = os.fspath(folder)
    fs, p = _fs(url)
    with _as_oserror(url):
        entries = fs.ls(p, detail=True)
    files = (e for e in entries if e["type"] == "file" and not e["name"].endswith("/"))
    found = (posixpath.basename(e["name"]) for e in files)
    return [n for n in found if fnmatch.fnmatchcase(n, pattern)]


def glob(pattern: str) -> list[str]:
    """The files matching a glob pattern, sorted (URLs keep their scheme)."""
    if not is_url(pattern):
        return sorted(local_glob.glob(pattern))
    fs, p = _fs(pattern)
    with _as_oserror(pattern):
        found = fs.glob(p, detail=True)
    return sorted(fs.unstrip_protocol(m) for m, info in found.items() if info["type"] == "file")


def find(folder: str) -> list[str]:
    """Every file under a URL folder, recursively, sorted (URLs)."""
    fs, p = _fs(folder)
    with _as_oserror(folder):
        found = fs.find(p, detail=True)
    # "folder marker" objects (keys ending in "/", made by consoles and sync tools) are no files
    files = (f for f, info in found.items() if info.get("type") == "file" and not f.endswith("/"))
    return sorted(fs.unstrip_protocol(f) for f in files)


def download(url: str, path: PathLike) -> None:
    """Copy one object to a local file (its folder is created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fs, p = _fs(url)
    with _as_oserror(url):
        fs.get_file(p, os.fspath(path))


def upload(path: PathLike, url: str) -> None:
    """Copy one local file to an object (complete or absent, like `write_bytes`)."""
    fs, p = _fs(url)
    with _as_oserror(url):
        fs.put_file(os.fspath(path), p)


def size(path: PathLike) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    url = os.fspath(path)
    fs, p = _fs(url)
    with _as_oserror(url):
        return int(fs.info(p)["size"])


def read_bytes(path: PathLike) -> bytes:
    if not is_url(path):
        return Path(path).read_bytes()
    url = os.fspath(path)
    fs, p = _fs(url)
    with _as_oserror(url):
        return bytes(fs.cat_file(p))


def open_binary(path: PathLike) -> io.BufferedReader:
    """The file for reading, from its start; a URL is streamed (its failures are OSErrors)."""
    if not is_url(path):
        return open(path, "rb")
    url = os.fspath(path)
    fs, p = _fs(url)
    with _as_oserror(url):
        return io.BufferedReader(_RemoteFile(fs.open(p, "rb"), url), buffer_size=_CHUNK)


def sha256(path: PathLike) -> str:
    """The file's sha256, streamed (a remote object is never held whole in memory)."""
    digest = hashlib.sha256()
    with open_binary(path) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def exists(path: PathLike) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = _fs(os.fspath(path))
    with _as_oserror(os.fspath(path)):
        return bool(fs.exists(p))


def makedirs(folder: PathLike) -> None:
    """Create a local folder and its parents; nothing for a URL (prefixes need no creating)."""
    if not is_url(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)


def remove(path: PathLike) -> None:
    """Delete a file or object; a missing one is not an error."""
    if not is_url(path):
        Path(path).unlink(missing_ok=True)
        return
    url = os.fspath(path)
    fs, p = _fs(url)
    with _as_oserror(url), contextlib.suppress(FileNotFoundError):
        fs.rm_file(p)


def remove_many(paths: list[str]) -> None:
    """Delete many files or objects (URLs in batched requests); missing ones are no error."""
    remote = [p for p in paths if is_url(p)]
    for p in paths:
        if not is_url(p):
            Path(p).unlink(missing_ok=True)
    if remote:
        fs, _ = _fs(remote[0])
        label = remote[0] if len(remote) == 1 else f"{remote[0]} (and {len(remote) - 1} more)"
        with _as_oserror(label), contextlib.suppress(FileNotFoundError):
            fs.rm([fs._strip_protocol(p) for p in remote])


def read_many(paths: list[str]) -> dict[str, bytes]:
    """path -> bytes of many small files; URLs are fetched concurrently (fsspec's `cat`)."""
    remote = [p for p in paths if is_url(p)]
    found = {p: Path(p).read_bytes() for p in paths if not is_url(p)}
    if remote:
        fs, _ = _fs(remote[0])
        by_key = {fs._strip_protocol(p): p for p in remote}
        with _as_oserror(remote[0]):
            got = fs.cat(list(by_key), on_error="return")  # a failure: its exception, per path
        for key, value in got.items():
            if isinstance(value, BaseException):
                with _as_oserror(by_key[key]):  # named by the URL that failed
                    raise value
            found[by_key[key]] = bytes(value)
    return found


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write a whole file; it appears under its name only complete (module docstring)."""
    with open_write(path) as f:
        f.write(data)


@contextlib.contextmanager
def open_write(path: PathLike) -> Iterator[Any]:
    """A binary file to stream into; on success it appears under `path`, complete, on an
    exception nothing appears there (a local temporary is removed, an upload not completed)."""
    path = resolve(path)  # a file:// URL is written the local way
    if isinstance(path, Path):
        with atomic_open(path) as f:
            yield f
        return
    fs, p = _fs(path)
    with _as_oserror(path):
        remote = fs.open(p, "wb")
    if not isinstance(remote, fsspec.spec.AbstractBufferedFile):
        raise OSError(
            f"{path}: this file system ({type(fs).__name__}) cannot write a file that appears "
            "only when complete; use a local folder or an object store (s3://, gs://)"
        )
    try:
        yield _RemoteWriter(remote, path)
    except BaseException:
        # never complete the upload: a small file was never sent, the parts of a multipart
        # upload are aborted (s3fs's discard); an abort that fails leaves an unfinished upload,
        # invisible under the name (an AbortIncompleteMultipartUpload lifecycle rule reclaims it)
        with contextlib.suppress(Exception):
            remote.discard()
        remote.closed = True  # so that neither close() nor garbage collection commits it
        raise
    with _as_oserror(path):
        remote.close()


class _RemoteWriter:
    """An fsspec file open for writing whose write failures are OSErrors naming the url."""

    def __init__(self, file: Any, url: str) -> None:
        self._file, self.url = file, url

    def write(self, data: bytes) -> int:
        with _as_oserror(self.url):
            return int(self._file.write(data))

    def tell(self) -> int:
        return int(self._file.tell())


class _RemoteFile(io.RawIOBase):
    """An fsspec file whose read and close failures are OSErrors naming the url."""

    def __init__(self, file: Any, url: str) -> None:
        super().__init__()
        self._file, self.url = file, url
        self.name = url  # what io.BufferedReader's repr, and so webdataset's messages, show

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # fsspec files seek by range requests (tarfile's "r:" mode needs it)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with _as_oserror(self.url):
            return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def readinto(self, buffer: Any) -> int:
        with _as_oserror(self.url):
            data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                with _as_oserror(self.url):
                    self._file.close()
            finally:
                super().close()


__all__ = [
    "WEBDATASET_SCHEMES",
    "download",
    "exists",
    "find",
    "forget",
    "glob",
    "is_folder",
    "is_url",
    "isdir",
    "isfile",
    "join",
    "makedirs",
    "names",
    "open_binary",
    "open_write",
    "read_bytes",
    "read_many",
    "remove",
    "remove_many",
    "resolve",
    "sha256",
    "size",
    "split",
    "store_attempts",
    "store_retries",
    "upload",
    "write_bytes",
]
