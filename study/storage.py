"""Where a study keeps its files: a local folder or an object store, named by one URI.

``open_store("s3://bucket/prefix")`` gives a pyarrow filesystem and the root path on it. S3 credentials
and region come from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``AWS_REGION``); an S3-compatible store's endpoint from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (as the AWS CLI reads them) or ``?endpoint_url=`` in the URI. Other schemes go to
pyarrow's own filesystems, then to fsspec's.

Objects are published whole: a local write goes to a temporary name then is renamed; an object store's
PUT is atomic by itself. :class:`StoreLease` is a lock that works on the store: the conditional create
of a marker object (S3 ``If-None-Match: *``, ``O_EXCL`` locally) that holds its owner and a lease expiry.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class StorageError(ValueError):
    """A storage URI that cannot be used; the message says what is wrong and how to fix it."""


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names a store other than a local folder (``file://`` and plain paths are local)."""
    match = _SCHEME.match(uri)
    return match is not None and match.group(1).lower() != "file"


def _endpoint(query: dict[str, list[str]]) -> str | None:
    if query.get("endpoint_url"):
        return query["endpoint_url"][0]
    return next((os.environ[k] for k in _ENDPOINT_ENV if os.environ.get(k)), None)


def s3_filesystem(endpoint_url: str | None = None) -> pafs.S3FileSystem:
    """An S3 filesystem: credentials from the AWS chain, ``endpoint_url`` for S3-compatible stores."""
    kwargs: dict[str, Any] = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if endpoint_url:
        parsed = urllib.parse.urlparse(endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(f"endpoint_url {endpoint_url!r} is not http(s)://HOST[:PORT]")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    if os.environ.get("AWS_PROFILE"):
        kwargs["profile"] = os.environ["AWS_PROFILE"]
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class Store:
    """A filesystem and the root path of a storage URI on it (``root`` never ends with ``/``)."""

    uri: str
    fs: pafs.FileSystem
    root: str
    endpoint_url: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.root or self.root.endswith("/"):
            raise StorageError(f"storage {self.uri!r}: give a bucket or folder (s3://bucket/prefix)")

    def path(self, *parts: str) -> str:
        """``root/part/...`` on :attr:`fs`; parts are relative names without ``.`` or ``..`` pieces."""
        pieces = [piece for part in parts for piece in part.split("/")]
        for piece in pieces:
            if piece in ("", ".", ".."):
                raise StorageError(f"{'/'.join(parts)!r} cannot name an object under {self.uri}")
        return "/".join([self.root, *pieces])

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            with self.fs.open_input_stream(self.path(*parts)) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            return None

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Publish ``data`` whole: readers see the old object or the new one, never a part."""
        path = self.path(*parts)
        parent = path.rpartition("/")[0]
        self.fs.create_dir(parent, recursive=True)
        target = f"{parent}/.{path.rpartition('/')[2]}.{uuid.uuid4().hex}.tmp" if self.local else path
        with self.fs.open_output_stream(target) as out:
            out.write(data)
        if self.local:
            self.fs.move(target, path)

    def delete(self, *parts: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(*parts))

    def names(self, *parts: str) -> list[str]:
        """The names directly under ``parts`` (sorted; none when it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def create_exclusive(self, data: bytes, *parts: str) -> bool:
        """Create the object only if none exists (the store decides atomically); False if one did."""
        path = self.path(*parts)
        if self.local:  # written aside, then hard-linked into place: never seen empty or half-written
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        if not isinstance(self.fs, pafs.S3FileSystem):
            raise StorageError(f"{self.uri}: no conditional create on this store; use s3:// or a local folder")
        return _s3_put_if_absent(path, data, self.endpoint_url)


def _s3_put_if_absent(path: str, data: bytes, endpoint_url: str | None) -> bool:
    """S3 ``PutObject`` with ``If-None-Match: *`` (pyarrow has no conditional write): boto3 is used here."""
    import boto3
    from botocore.exceptions import ClientError

    bucket, _, key = path.partition("/")
    client = boto3.client("s3", endpoint_url=endpoint_url)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True


def open_store(uri: str) -> Store:
    """The :class:`Store` of a storage URI or local path (made absolute)."""
    match = _SCHEME.match(uri)
    if not match or match.group(1).lower() == "file":
        local = urllib.parse.urlparse(uri).path if match else uri
        return Store(uri, pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local)).rstrip("/") or "/")
    parsed = urllib.parse.urlparse(uri)
    root = (parsed.netloc + parsed.path).rstrip("/")
    if match.group(1).lower() in ("s3", "s3a"):
        if not parsed.netloc:
            raise StorageError(f"storage {uri!r} names no bucket: write s3://BUCKET/PREFIX")
        endpoint = _endpoint(urllib.parse.parse_qs(parsed.query))
        return Store(uri, s3_filesystem(endpoint), root, endpoint)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError):  # ArrowInvalid is a ValueError
        fs, path = _fsspec(uri)
    return Store(uri, fs, path.rstrip("/"))


def _fsspec(uri: str) -> tuple[pafs.FileSystem, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as err:
        raise StorageError(f"storage {uri!r}: no filesystem for it ({err}); use a local folder or s3://") from err
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


@dataclass
class StoreLease:
    """A lock on ``name`` in a store, for work done once across nodes that share only the store.

    :meth:`acquire` creates the marker object ``<name>.lease`` only if none exists; the marker holds the
    owner and an expiry ``lease_s`` ahead. A marker past its expiry (its holder died) is deleted and the
    create tried again. :meth:`renew` pushes the expiry on during long work; :meth:`release` deletes it.
    """

    store: Store
    name: str
    lease_s: float = 300.0
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    @property
    def marker(self) -> str:
        return f"{self.name}.lease"

    def _doc(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires": time.time() + self.lease_s}).encode()

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; False while someone else holds it."""
        if self.store.create_exclusive(self._doc(), self.marker):
            return True
        raw = self.store.read_bytes(self.marker)
        try:
            expires = float(json.loads(raw or b"{}").get("expires", 0))
        except (ValueError, AttributeError):
            expires = 0.0  # unreadable marker: treat as expired
        if raw is not None and expires > time.time():
            return False
        self.store.delete(self.marker)  # the holder is gone; racing takers meet at the conditional create
        if not self.store.create_exclusive(self._doc(), self.marker):
            return False
        # Two takers of the same expired lease can both delete then create; the later marker wins.
        raw = self.store.read_bytes(self.marker)
        return raw is not None and json.loads(raw).get("owner") == self.owner

    def acquire(self, timeout_s: float = 3600.0, poll_s: float = 0.5) -> None:
        """Wait until :meth:`try_acquire` succeeds (TimeoutError after ``timeout_s``)."""
        end = time.monotonic() + timeout_s
        while not self.try_acquire():
            if time.monotonic() > end:
                raise TimeoutError(f"{self.store.uri}/{self.marker} still held after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def renew(self) -> None:
        """Push the expiry on (only the holder calls this)."""
        self.store.write_bytes(self._doc(), self.marker)

    def release(self) -> None:
        raw = self.store.read_bytes(self.marker)
        if raw is not None and json.loads(raw).get("owner") == self.owner:
            self.store.delete(self.marker)


def compute_once(store: Store, name: str, build: Any, lease_s: float = 300.0, timeout_s: float = 3600.0,
                 poll_s: float = 0.5) -> bytes:
    """The object ``name`` of ``store``, built by ``build()`` (returning bytes) at most once however many
    nodes ask at the same time: one takes the lease and builds then publishes; the others wait for the
    finished object (or take over the lease if its holder died)."""
    end = time.monotonic() + timeout_s
    while True:
        data = store.read_bytes(name)
        if data is not None:
            return data
        lease = StoreLease(store, name, lease_s)
        if lease.try_acquire():
            try:
                data = store.read_bytes(name)  # published while we took the lease
                if data is None:
                    data = bytes(build())
                    store.write_bytes(data, name)
                return data
            finally:
                lease.release()
        if time.monotonic() > end:
            raise TimeoutError(f"{store.uri}/{name} not published after {timeout_s:.0f} s")
        time.sleep(poll_s)


# A study on a remote store runs in a local working folder (its mirror); its record (everything but
# Tune's own experiment, which Tune writes to the store itself) is pushed to the store after a run and
# pulled from it before resume, status, report and export.
MIRRORS = Path(".ocr-study") / "mirrors"
_NOT_SYNCED = ("tune", "mlartifacts", "mlflow.db")


def mirror_dir(study_uri: str) -> Path:
    """The local working folder of the study at ``study_uri`` (absolute; one per URI)."""
    parsed = urllib.parse.urlparse(study_uri)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parsed.scheme}_{parsed.netloc}{parsed.path}").strip("_")
    return (MIRRORS / safe).absolute()


def push_record(folder: Path, study_uri: str) -> int:
    """Copy the study record in ``folder`` to the store (Tune's folder excluded); returns files copied."""
    store, count = open_store(study_uri), 0
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(_NOT_SYNCED) and not path.name.endswith((".lock", ".tmp")):
            store.write_bytes(path.read_bytes(), rel)
            count += 1
    return count


def pull_record(study_uri: str, folder: Path) -> int:
    """Copy the study record from the store into ``folder`` (Tune's folder excluded); returns files copied."""
    store, count = open_store(study_uri), 0
    selector = pafs.FileSelector(store.root, recursive=True, allow_not_found=True)
    for info in store.fs.get_file_info(selector):
        rel = info.path[len(store.root) + 1:]
        if info.type != pafs.FileType.File or rel.startswith(_NOT_SYNCED) or rel.endswith(".lease"):
            continue
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.read_bytes(rel) or b"")
        count += 1
    return count
