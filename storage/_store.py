"""Where shared files live: a local folder or an object store, named by one URI.

``open_store("s3://bucket/prefix")`` gives a pyarrow filesystem and the root path on it. S3 credentials
and region come from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``AWS_REGION``); an S3-compatible store's endpoint from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (as the AWS CLI reads them) or ``?endpoint_url=`` in the URI. Other schemes go to
pyarrow's own filesystems, then to fsspec's.

Objects are published whole: a local write goes to a temporary name then is renamed; an object store's
PUT (or multipart upload) becomes visible only once complete. An S3 object is read with one GET, so a
reader sees one version of it whole (pyarrow's reader asks the size first, then reads ranges: an object
deleted or replaced in between broke it, the cause of a flaky concurrent-build test).

:class:`StoreLease` is a lock that works on the store: the conditional create of a marker object (S3
``If-None-Match: *``, a hard link locally) that holds its owner and a lease expiry. A marker that is
released or past its expiry is taken over by a conditional replace (S3 ``If-Match: <ETag>``; locally
under ``flock`` of its folder), so of two nodes that see the same stale marker exactly one takes it.
:func:`compute_once` and :func:`fetch_or_build` build an object once however many nodes ask.

Shared by ``pipelines`` (the stage-1 cache) and ``study`` (the study's record, see
:mod:`storage._record`); it imports neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.fs as pafs

from record import failpoint

log = logging.getLogger(__name__)
T = TypeVar("T")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_CONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412")
_CHUNK = 1 << 22


class StorageError(ValueError):
    """A storage URI that cannot be used; the message says what is wrong and how to fix it."""


class LeaseLostError(RuntimeError):
    """A lease's holder found it taken over (it was not renewed in time)."""


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names a store other than a local folder (``file://`` and plain paths are local).

    The one test of "is this storage remote?" in the project: a ``"://" in uri`` test would call a
    ``file://`` folder remote.
    """
    match = _SCHEME.match(uri)
    return match is not None and match.group(1).lower() != "file"


def local_path(uri: str) -> Path:
    """The local folder a local ``uri`` names (``file:///srv/studies`` or a plain path, ``~`` expanded).

    Raises ``StorageError`` for a remote URI (see :func:`is_remote`).
    """
    if is_remote(uri):
        raise StorageError(f"{uri!r} is on an object store, not a local folder")
    local = urllib.parse.unquote(urllib.parse.urlparse(uri).path) if _SCHEME.match(uri) else uri
    return Path(local).expanduser()


def join_uri(base: str, *parts: str) -> str:
    """``base`` with ``parts`` appended to its path; a query (``?endpoint_url=...``) stays at the end.

    ``join_uri("s3://b/studies?endpoint_url=http://minio:9000", "quick")`` is
    ``s3://b/studies/quick?endpoint_url=http://minio:9000``. A plain local path is joined as a path.
    """
    names = [part.strip("/") for part in parts if part.strip("/")]
    if not _SCHEME.match(base):
        return "/".join([base.rstrip("/"), *names])
    split = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(split._replace(path="/".join([split.path.rstrip("/"), *names])))


def plain_uri(uri: str) -> str:
    """``uri`` without its query: what tools that read the endpoint elsewhere (MLflow, Ray) are given."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(uri)._replace(query="")) if _SCHEME.match(uri) else uri


def _endpoint(query: dict[str, list[str]]) -> str | None:
    if query.get("endpoint_url"):
        return query["endpoint_url"][0]
    return next((os.environ[k] for k in _ENDPOINT_ENV if os.environ.get(k)), None)


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def s3_filesystem(endpoint_url: str | None = None) -> pafs.S3FileSystem:
    """An S3 filesystem: credentials from the AWS chain, ``endpoint_url`` for S3-compatible stores."""
    kwargs: dict[str, Any] = {}
    if _region():
        kwargs["region"] = _region()
    if endpoint_url:
        parsed = urllib.parse.urlparse(endpoint_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(f"endpoint_url {endpoint_url!r} is not http(s)://HOST[:PORT]")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    if os.environ.get("AWS_PROFILE"):
        kwargs["profile"] = os.environ["AWS_PROFILE"]
    return pafs.S3FileSystem(**kwargs)


_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client for ``endpoint_url`` (one per endpoint and process; clients are thread-safe,
    but boto3's default session is not, so each is made from its own session under a lock)."""
    import boto3

    key = (endpoint_url, _region())
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=key[1])
        return _clients[key]


def _failed_condition(err: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(err, ClientError) and str(err.response.get("Error", {}).get("Code")) in _CONDITION_FAILED


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

    @property
    def s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def child(self, *parts: str) -> Store:
        """The store rooted at ``parts`` under this one."""
        return Store(join_uri(self.uri, *parts), self.fs, self.path(*parts), self.endpoint_url)

    def _bucket_key(self, *parts: str) -> tuple[str, str]:
        bucket, _, key = self.path(*parts).partition("/")
        return bucket, key

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_versioned(self, *parts: str) -> tuple[bytes, str] | None:
        """The object's bytes and a tag of this version (S3: its ETag), or None when there is none."""
        if not self.s3:
            data = self._read_stream(*parts)
            return None if data is None else (data, hashlib.sha256(data).hexdigest())
        bucket, key = self._bucket_key(*parts)
        try:
            reply = s3_client(self.endpoint_url).get_object(Bucket=bucket, Key=key)
        except Exception as err:
            if _failed_condition(err):
                return None
            raise
        return reply["Body"].read(), str(reply["ETag"])

    def read_bytes(self, *parts: str) -> bytes | None:
        """The object's bytes (one version, whole), or None when there is none."""
        if not self.s3:
            return self._read_stream(*parts)
        found = self.read_versioned(*parts)
        return None if found is None else found[0]

    def _read_stream(self, *parts: str) -> bytes | None:
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

    def upload(self, source: Path, *parts: str) -> None:
        """Publish the file ``source`` whole as the object ``parts`` (streamed, not held in memory)."""
        path = self.path(*parts)
        parent = path.rpartition("/")[0]
        self.fs.create_dir(parent, recursive=True)
        target = f"{parent}/.{path.rpartition('/')[2]}.{uuid.uuid4().hex}.tmp" if self.local else path
        with source.open("rb") as src, self.fs.open_output_stream(target) as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
        if self.local:
            self.fs.move(target, path)

    def download(self, target: Path, *parts: str) -> bool:
        """Copy the object to the file ``target`` (written aside, then renamed); False when there is none."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            with tmp.open("wb") as out:
                if not self._copy_into(out, *parts):
                    return False
            os.replace(tmp, target)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _copy_into(self, out: Any, *parts: str) -> bool:
        if self.s3:  # one GET: one version of the object, whole
            bucket, key = self._bucket_key(*parts)
            try:
                body = s3_client(self.endpoint_url).get_object(Bucket=bucket, Key=key)["Body"]
            except Exception as err:
                if _failed_condition(err):
                    return False
                raise
            shutil.copyfileobj(body, out, _CHUNK)
            return True
        try:
            with self.fs.open_input_stream(self.path(*parts)) as stream:
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
        except FileNotFoundError:
            return False
        return True

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
        return self._s3_put(data, parts, IfNoneMatch="*")

    def replace_if(self, data: bytes, tag: str, *parts: str) -> bool:
        """Replace the object only if it is still the version ``tag`` names (from :meth:`read_versioned`);
        False if it changed or is gone. The store decides atomically (locally: under ``flock``)."""
        if not self.local:
            return self._s3_put(data, parts, IfMatch=tag)
        path = self.path(*parts)
        with _folder_flock(os.path.dirname(path)):
            current = self.read_versioned(*parts)
            if current is None or current[1] != tag:
                return False
            self.write_bytes(data, *parts)
        return True

    def _s3_put(self, data: bytes, parts: tuple[str, ...], **condition: str) -> bool:
        """S3 ``PutObject`` with a condition header (pyarrow has no conditional write)."""
        if not self.s3:
            raise StorageError(f"{self.uri}: no conditional write on this store; use s3:// or a local folder")
        bucket, key = self._bucket_key(*parts)
        try:
            s3_client(self.endpoint_url).put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except Exception as err:
            if _failed_condition(err):
                return False
            raise
        return True


@contextlib.contextmanager
def _folder_flock(folder: str) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def open_store(uri: str) -> Store:
    """The :class:`Store` of a storage URI or local path (made absolute)."""
    match = _SCHEME.match(uri)
    if not match or match.group(1).lower() == "file":
        return Store(uri, pafs.LocalFileSystem(), os.path.abspath(local_path(uri)).rstrip("/") or "/")
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


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class StoreLease:
    """A lock on ``name`` in a store, for work done once across nodes that share only the store.

    :meth:`try_acquire` creates the marker object ``<name>.lease`` only if none exists; the marker holds
    the owner and an expiry ``lease_s`` ahead. A marker that is released, past its expiry (its holder
    died) or unreadable is taken over by a conditional replace of the version that was read, so only one
    of several takers wins. :meth:`renew` pushes the expiry on during long work; :meth:`release` marks
    the marker free (only while this holder still holds it).
    """

    store: Store
    name: str
    lease_s: float = 300.0
    owner: str = field(default_factory=_owner)
    _tag: str | None = field(default=None, repr=False)

    @property
    def marker(self) -> str:
        return f"{self.name}.lease"

    def _doc(self, owner: str | None = None) -> bytes:
        return json.dumps({"owner": owner, "expires": time.time() + self.lease_s}).encode()

    def try_acquire(self) -> bool:
        """Take the lease if it is free, released or expired; False while someone else holds it."""
        doc = self._doc(self.owner)
        if self.store.create_exclusive(doc, self.marker):
            return self._confirm(doc)
        current = self.store.read_versioned(self.marker)
        if current is None or _held(current[0]):  # gone (retried at the next poll) or held
            return False
        return self.store.replace_if(doc, current[1], self.marker) and self._confirm(doc)

    def _confirm(self, doc: bytes) -> bool:
        """Read the marker back: ours only if it still holds our document (and keep its version tag)."""
        current = self.store.read_versioned(self.marker)
        if current is None or current[0] != doc:
            return False
        self._tag = current[1]
        return True

    def acquire(self, timeout_s: float = 3600.0, poll_s: float = 0.5) -> None:
        """Wait until :meth:`try_acquire` succeeds (TimeoutError after ``timeout_s``)."""
        end = time.monotonic() + timeout_s
        while not self.try_acquire():
            if time.monotonic() > end:
                raise TimeoutError(f"{self.store.uri}/{self.marker} still held after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def renew(self) -> None:
        """Push the expiry on (only the holder calls this); :class:`LeaseLostError` if it was taken over."""
        doc = self._doc(self.owner)
        if self._tag is None or not self.store.replace_if(doc, self._tag, self.marker) or not self._confirm(doc):
            self._tag = None
            raise LeaseLostError(f"{self.store.uri}/{self.marker}: the lease of {self.owner} was taken over")

    def release(self) -> None:
        """Mark the lease free, if this holder still holds it."""
        if self._tag is not None:
            self.store.replace_if(self._doc(None), self._tag, self.marker)
            self._tag = None

    @contextlib.contextmanager
    def renewing(self) -> Iterator[None]:
        """Renew the lease every third of ``lease_s`` while the block runs (work longer than a lease)."""
        stop = threading.Event()

        def keep() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    self.renew()
                except (LeaseLostError, OSError) as err:
                    log.warning("%s", err)
                    return

        thread = threading.Thread(target=keep, name=f"lease:{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _held(raw: bytes) -> bool:
    """Whether a marker's document names a holder whose lease runs (unreadable: not held)."""
    try:
        doc = json.loads(raw)
        return bool(doc.get("owner")) and float(doc.get("expires", 0)) > time.time()
    except (ValueError, AttributeError, TypeError):
        return False


def _once(store: Store, name: str, fetch: Callable[[], T | None], make: Callable[[StoreLease], T],
          lease_s: float, timeout_s: float, poll_s: float) -> T:
    """What ``fetch()`` finds, or what ``make()`` publishes under the lease of ``name`` (one maker at a
    time across nodes; the others poll ``fetch`` until it finds the published object)."""
    end = time.monotonic() + timeout_s
    while True:
        found = fetch()
        if found is not None:
            return found
        lease = StoreLease(store, name, lease_s)
        if lease.try_acquire():
            try:
                with lease.renewing():
                    found = fetch()  # published while we took the lease
                    found = make(lease) if found is None else found
            except BaseException:
                lease.release()
                raise
            store.delete(lease.marker)  # published: the lease no longer matters to anyone
            return found
        if time.monotonic() > end:
            raise TimeoutError(f"{store.uri}/{name} not published after {timeout_s:.0f} s")
        time.sleep(poll_s)


def compute_once(store: Store, name: str, build: Callable[[], bytes], lease_s: float = 300.0,
                 timeout_s: float = 3600.0, poll_s: float = 0.5) -> bytes:
    """The object ``name`` of ``store``, built by ``build()`` (returning bytes) at most once however many
    nodes ask at the same time: one takes the lease and builds then publishes; the others wait for the
    finished object (or take over the lease if its holder died)."""

    def make(_: StoreLease) -> bytes:
        data = bytes(build())
        store.write_bytes(data, name)
        return data

    return _once(store, name, lambda: store.read_bytes(name), make, lease_s, timeout_s, poll_s)


BUILDS_SUFFIX = ".builds"  # <name>.builds/<random>.json: one receipt per build of a shared object


def fetch_or_build(store: Store, name: str, target: Path, build: Callable[[Path], None], lease_s: float = 300.0,
                   timeout_s: float = 6 * 3600.0, poll_s: float = 1.0) -> bool:
    """Make the file ``target`` a copy of the object ``name``, building it at most once across nodes.

    The node that takes the lease runs ``build(tmp)`` (writing a file), publishes it whole (upload, then
    a receipt ``<name>.builds/<random>.json`` naming the builder), and moves it to ``target``; the others wait for the
    published object and download it. Returns whether this call built it.
    """

    def fetch() -> str | None:
        return "fetched" if store.download(target, name) else None

    def make(lease: StoreLease) -> str:
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.build")
        try:
            start = time.perf_counter()
            build(tmp)
            failpoint("stage1.publish", name=name)  # built, not yet published: the lease is still held
            store.upload(tmp, name)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        receipt = {"owner": lease.owner, "seconds": round(time.perf_counter() - start, 3), "at": time.time()}
        store.write_bytes(json.dumps(receipt).encode(), f"{name}{BUILDS_SUFFIX}", f"{uuid.uuid4().hex}.json")
        return "built"

    return _once(store, name, fetch, make, lease_s, timeout_s, poll_s) == "built"
