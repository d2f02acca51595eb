"""Every read and write goes through fsspec, so local paths, memory://, gs://, s3:// and http(s):// all work.

Reads are bounded: only the schemes of a `ReadPolicy` are opened, no input may exceed its byte limit,
every read has a time limit (HTTP reads: a time-out and a bounded number of retries), only regular
files are opened (a FIFO or a device would block or never end), and HTTP reads connect (redirects
included) only to the addresses the policy allows: by default not loopback, link-local (the cloud
metadata service) or reserved ones, so a manifest row cannot make a worker fetch from inside its own
host (SSRF).
Failures raise a `ReadError` subclass whose `error_type` is the report's short code (a missing input
stays a plain `FileNotFoundError`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import os
import re
import socket
import stat
import threading
import time
import uuid

import fsspec

DEFAULT_ALLOWED_SCHEMES = ("file", "memory", "gs", "s3", "http", "https")
DEFAULT_MAX_INPUT_BYTES = 256 * 2**20
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_HTTP_TIMEOUT = 30.0
DEFAULT_HTTP_RETRIES = 2
HTTP_RETRY_BACKOFF = 0.25  # seconds before the first retry; doubles each time, at most 4 s
HTTP_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
HTTP_MAX_REDIRECTS = 5
#: --http-allowed-addresses: which addresses an HTTP read may connect to. "public": the internet only;
#: "private" (default) also private networks (RFC 1918, IPv6 unique-local), as a catalog server on a
#: company network; "any" also loopback, link-local, unspecified (0.0.0.0) and reserved addresses,
#: e.g. a test server on localhost. The defaults imgproxy's source-address settings have had since 3.15.
HTTP_ADDRESS_POLICIES = ("public", "private", "any")
DEFAULT_HTTP_ALLOWED_ADDRESSES = "private"
_CHUNK = 1 << 20


class ReadError(OSError):
    """An input could not be read; `error_type` is the report's short code for why."""

    error_type = "read_error"


class UnsupportedScheme(ReadError):
    error_type = "unsupported_scheme"


class InputTooLarge(ReadError):
    error_type = "too_large"


class NotAFile(ReadError):
    error_type = "not_a_file"


class ReadTimeout(ReadError):
    error_type = "timeout"


class AddressNotAllowed(ReadError):
    error_type = "address_not_allowed"


class InvalidURI(ReadError):
    """A URI that no attempt could ever read (a NUL byte, a URL without a host or with a bad port):
    the manifest row is at fault, so it is refused before any request and never retried."""

    error_type = "bad_manifest_row"


class HTTPStatusError(ReadError):
    error_type = "http_error"

    def __init__(self, status: int, reason: str = ""):
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status


@dataclasses.dataclass(frozen=True)
class ReadPolicy:
    """What an input read may do: which URI schemes, how many bytes, how long over HTTP."""

    allowed_schemes: tuple[str, ...] = DEFAULT_ALLOWED_SCHEMES
    max_bytes: int = DEFAULT_MAX_INPUT_BYTES
    read_timeout: float = DEFAULT_READ_TIMEOUT  # seconds for one whole read from a file system or object store
    http_timeout: float = DEFAULT_HTTP_TIMEOUT  # seconds for one whole request, body included
    http_retries: int = DEFAULT_HTTP_RETRIES  # extra attempts after a time-out, 5xx/429 or lost connection
    http_allowed_addresses: str = DEFAULT_HTTP_ALLOWED_ADDRESSES  # one of HTTP_ADDRESS_POLICIES


def scheme(uri: str) -> str:
    """The URI's scheme, "file" for plain paths (chained URLs such as "simplecache::s3" stay whole)."""
    protocol, _ = fsspec.core.split_protocol(uri)
    return (protocol or "file").lower()


def check_scheme(uri: str, allowed_schemes=DEFAULT_ALLOWED_SCHEMES) -> str:
    found = scheme(uri)
    if found not in allowed_schemes:
        raise UnsupportedScheme(
            f"scheme {found!r} is not allowed (--allowed-schemes {','.join(allowed_schemes)})"
        )
    return found


def check_well_formed(uri: str) -> None:
    """Raise `InvalidURI` when `uri` cannot name anything readable, whatever the network does."""
    if "\0" in uri:
        raise InvalidURI("the URI contains a NUL byte")
    if scheme(uri) in ("http", "https"):
        from yarl import URL

        try:
            url = URL(uri)
            url.port  # noqa: B018 - yarl checks the port when it is read
        except ValueError as exc:
            raise InvalidURI(f"malformed URL: {exc}") from None
        if not url.host:
            raise InvalidURI("malformed URL: no host")


def read_bytes(uri: str, policy: ReadPolicy | None = None) -> bytes:
    """All bytes of `uri`, within `policy` (default: `ReadPolicy()`)."""
    return read_input(uri, policy)[0]


def read_input(uri: str, policy: ReadPolicy | None = None) -> tuple[bytes, dict | None]:
    """All bytes of `uri` within `policy`, and its `fingerprint` as of that read (from the same metadata
    the read used, taken before the bytes: an input changed during the read gets a stale fingerprint,
    which only makes --skip-existing redo it)."""
    policy = policy or ReadPolicy()
    check_well_formed(uri)
    if check_scheme(uri, policy.allowed_schemes) in ("http", "https"):
        return _read_http(uri, policy), None
    return _within(policy.read_timeout, _read_file, uri, policy)


def fingerprint(uri: str, policy: ReadPolicy | None = None) -> dict | None:
    """What says that an input is unchanged without reading it: {"size", "modified"}, the modified part
    being a local file's mtime in ns or an object store's version (generation, version id, ETag,
    update time); None where there is nothing to trust (HTTP). Within `policy`'s schemes and time."""
    policy = policy or ReadPolicy()
    check_well_formed(uri)
    if check_scheme(uri, policy.allowed_schemes) in ("http", "https"):
        return None
    return _within(policy.read_timeout, _fingerprint_now, uri)


#: Metadata that changes whenever an object's bytes do, in the order trusted (gcsfs, s3fs, other
#: fsspec file systems, memory://).
_VERSION_KEYS = ("generation", "VersionId", "ETag", "etag", "mtime", "LastModified", "updated", "created")


def _fingerprint_now(uri: str) -> dict | None:
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return _local_fingerprint(os.stat(path))
    return _store_fingerprint(fs.info(path))


def _local_fingerprint(status: os.stat_result) -> dict:
    return {"size": status.st_size, "modified": status.st_mtime_ns}


def _store_fingerprint(info: dict) -> dict | None:
    version = next((info[key] for key in _VERSION_KEYS if info.get(key) is not None), None)
    return None if version is None else {"size": info.get("size"), "modified": str(version)}


def _within(seconds: float, read, *args):
    """`read(*args)`, or `ReadTimeout` after `seconds`. The read runs in a daemon thread of its own, so
    a read stuck in the kernel (a hung network mount) ends its unit instead of the whole batch; that
    thread is left to finish or to die with the process."""
    outcome = {}

    def target():
        try:
            outcome["value"] = read(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as it is
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="toonbeam-read", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ReadTimeout(f"no complete read within {seconds:g} s (--read-timeout)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular(path: str) -> os.stat_result:
    """A local path's metadata; NotAFile for anything but a regular file, found without opening it
    (opening a FIFO waits for a writer; a device never ends)."""
    status = os.stat(path)
    if stat.S_ISDIR(status.st_mode):
        raise NotAFile("is a directory, not a file")
    for test, kind in _NOT_REGULAR:
        if test(status.st_mode):
            raise NotAFile(f"is {kind}, not a regular file")
    return status


def _read_file(uri: str, policy: ReadPolicy) -> tuple[bytes, dict | None]:
    fs, path = fsspec.core.url_to_fs(uri)
    local = isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    if local:
        found = _local_fingerprint(_check_regular(path))
    try:
        with fs.open(path, "rb") as handle:
            if not local:  # the metadata the file object opened with (no second request), else the store's
                found = _store_fingerprint(getattr(handle, "details", None) or fs.info(path))
            size = getattr(handle, "size", None)
            if size is not None and size > policy.max_bytes:
                raise _too_large(policy, size)
            data = handle.read(policy.max_bytes + 1)
    except IsADirectoryError as exc:
        raise NotAFile("is a directory, not a file") from exc
    except FileNotFoundError:
        if _is_dir(fs, path):
            raise NotAFile("is a directory, not a file") from None
        raise
    if len(data) > policy.max_bytes:
        raise _too_large(policy)
    return data, found


def _too_large(policy: ReadPolicy, size: int | None = None) -> InputTooLarge:
    what = f"{size} bytes" if size is not None else "more bytes"
    return InputTooLarge(f"file has {what} than the limit of {policy.max_bytes} (--max-input-bytes)")


def _is_dir(fs, path: str) -> bool:
    try:
        return fs.isdir(path)
    except Exception:  # noqa: BLE001 - only refines the message of a failed read
        return False


def _read_http(uri: str, policy: ReadPolicy) -> bytes:
    attempts = 1 + max(0, policy.http_retries)
    for attempt in range(1, attempts + 1):
        try:
            return _http_get(uri, policy)
        except ReadError as exc:
            if not _retryable(exc) or attempt == attempts:
                if attempt > 1:
                    exc.args = (f"{exc.args[0]} (after {attempt} attempts)", *exc.args[1:])
                raise
            time.sleep(min(HTTP_RETRY_BACKOFF * 2 ** (attempt - 1), 4.0))
    raise AssertionError("unreachable")


def _retryable(exc: ReadError) -> bool:
    """Time-outs, lost connections and 5xx/429 may pass on a retry; a 4xx or an oversized body will not."""
    if isinstance(exc, HTTPStatusError):
        return exc.status in HTTP_RETRY_STATUSES
    return type(exc) in (ReadError, ReadTimeout)


@functools.lru_cache(maxsize=None)
def _http_filesystem(allowed_addresses: str):
    """fsspec's HTTP filesystem, for its event-loop thread and a pooled aiohttp session, one per process
    and address policy. The session's resolver refuses a host with any address the policy does not allow
    (any of them may be the one connected to): the check runs where the connection's addresses come
    from, so a DNS answer cannot change between check and connection, and the connector's DNS cache
    keeps it to one lookup per host and TTL. (IP literals never reach a resolver: `_get_bounded` checks
    them.) aiohttp is imported here, not at module level: only HTTP reads need it."""
    import aiohttp
    from aiohttp.resolver import DefaultResolver

    class PolicyResolver(DefaultResolver):
        async def resolve(self, host, port=0, family=socket.AF_INET):
            results = await super().resolve(host, port, family)
            for result in results:
                _check_address(host, result["host"], allowed_addresses)
            return results

    async def get_client(**kwargs):
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PolicyResolver()), **kwargs)

    return fsspec.filesystem("http", get_client=get_client, skip_instance_cache=True)


def _http_get(uri: str, policy: ReadPolicy) -> bytes:
    """One streamed GET on fsspec's loop and session. (fsspec's own `open`/`cat` are not used: they send
    HEAD requests first, turn every failed status into FileNotFoundError, and read bodies unbounded.)"""
    import asyncio

    import aiohttp
    from fsspec.asyn import sync

    fs = _http_filesystem(policy.http_allowed_addresses)
    session = sync(fs.loop, fs.set_session)
    try:
        return sync(fs.loop, _get_bounded, session, uri, policy)
    except (FileNotFoundError, ReadError):
        raise
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise ReadTimeout(f"no complete response within {policy.http_timeout:g} s (--http-timeout)") from exc
    except aiohttp.ClientResponseError as exc:
        raise HTTPStatusError(exc.status, exc.message or "") from exc
    except aiohttp.ClientError as exc:
        if isinstance(getattr(exc, "os_error", None), AddressNotAllowed):  # the resolver's, wrapped
            raise exc.os_error from None
        raise ReadError(f"HTTP request failed: {type(exc).__name__}: {exc}") from exc


def check_addresses(uri: str, policy: ReadPolicy) -> None:
    """AddressNotAllowed when the host of an http(s) `uri` resolves to an address `policy` refuses, found
    before any request: for a URI that is also written to (--ff-model-dir), whose uploads do not go
    through the policy's session."""
    if scheme(uri) not in ("http", "https"):
        return
    check_well_formed(uri)
    from yarl import URL

    host = URL(uri).host
    for info in socket.getaddrinfo(host, None):
        _check_address(host, info[4][0], policy.http_allowed_addresses)


def address_kind(address: str) -> str:
    """"public", "private", "loopback", "link-local", "unspecified", "multicast" or "reserved".

    >>> [address_kind(a) for a in ("8.8.8.8", "10.1.2.3", "127.0.0.1", "169.254.169.254", "0.0.0.0", "::ffff:127.0.0.1")]
    ['public', 'private', 'loopback', 'link-local', 'unspecified', 'loopback']
    """
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone ("fe80::1%eth0") is not part of the address
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "unspecified", "multicast"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if ip.is_global:
        return "public"
    return "private" if ip.is_private else "reserved"


def _address_allowed(kind: str, policy: str) -> bool:
    return policy == "any" or kind == "public" or (policy == "private" and kind == "private")


def _check_address(host: str, address: str, allowed_addresses: str) -> None:
    kind = address_kind(address)
    if not _address_allowed(kind, allowed_addresses):
        raise AddressNotAllowed(f"{host} is {address}, a {kind} address (--http-allowed-addresses {allowed_addresses})")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _get_bounded(session, uri: str, policy: ReadPolicy) -> bytes:
    """GET `uri`, following up to HTTP_MAX_REDIRECTS redirects itself, so that each hop's scheme and
    addresses are checked like the first URL's."""
    import aiohttp
    from yarl import URL

    timeout = aiohttp.ClientTimeout(total=policy.http_timeout)  # the whole request, body included
    url = URL(uri)
    for _ in range(HTTP_MAX_REDIRECTS + 1):
        if check_scheme(str(url), policy.allowed_schemes) not in ("http", "https"):
            raise UnsupportedScheme(f"redirected to {url.scheme}://, not http(s)")
        if _is_ip_literal(url.host):  # names are checked by the session's resolver (_http_filesystem)
            _check_address(url.host, url.host, policy.http_allowed_addresses)
        async with session.get(url, timeout=timeout, allow_redirects=False) as response:
            location = response.headers.get("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                url = response.url.join(URL(location))
                continue
            return await _read_body(response, uri, policy)
    raise HTTPStatusError(response.status, f"more than {HTTP_MAX_REDIRECTS} redirects")


async def _read_body(response, uri: str, policy: ReadPolicy) -> bytes:
    if response.status == 404:
        raise FileNotFoundError(uri)
    response.raise_for_status()
    if response.content_length is not None and response.content_length > policy.max_bytes:
        raise _too_large(policy, response.content_length)
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > policy.max_bytes:
            raise _too_large(policy)
        chunks.append(chunk)
    return b"".join(chunks)


def exists(uri: str) -> bool:
    """Whether `uri` names an existing file or folder (never raises for a missing one)."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)


#: The temporary name of a local atomic write: "<final name>.<12 hex digits>.tmp".
_TEMPORARY = re.compile(r"^(.+)\.[0-9a-f]{12}\.tmp$")


def temporary_of(path: str) -> str | None:
    """The final path that `path` is a temporary file of (see `write_atomic`), or None."""
    match = _TEMPORARY.match(path)
    return match.group(1) if match else None


def write_atomic(uri: str, data: bytes) -> None:
    """Write so that `uri` either does not exist or holds all of `data`, even if the worker is killed.

    Local files are written under a temporary name in the same folder, flushed to disk and renamed (a
    kill in between leaves the temporary file, which the next run into the folder removes); object
    stores get a single put, which is atomic there.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        fs.pipe_file(path, data)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: How a name that carries a digest ends: an id kept as it is never ends like this.
_DIGEST_TAIL = re.compile(r"-[0-9a-f]{8}$")
#: Longest sanitised id kept whole; longer ones are cut and get a digest (file names stay < 255 bytes
#: even for an NST pair "<content>__<style>.png.json" and its temporary name).
MAX_NAME = 100


def safe_name(identifier: str) -> str:
    """A file-name-safe form of an id that can never leave its folder.

    Ids that needed changing (or were longer than MAX_NAME) get a short digest of the original, so
    that two different ids never share a file name ("a/b" and "a_b" stay apart). So do ids that end
    like a digest ("a_b-3ec69c85", which is how "a/b" is written): a name kept as its id never looks
    like a digested one, and the mapping stays one-to-one (up to a digest collision, which
    `read_manifest` refuses).
    """
    cleaned = _UNSAFE.sub("_", identifier).strip("._") or "_"
    if cleaned == identifier and len(cleaned) <= MAX_NAME and not _DIGEST_TAIL.search(cleaned):
        return cleaned
    digest = hashlib.sha1(identifier.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{cleaned[:MAX_NAME]}-{digest}"
