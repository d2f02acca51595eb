"""Bounded reads (schemes, sizes, HTTP time-outs and retries), atomic writes, safe names, sidecars and
the --skip-existing decision they feed."""
import errno
import hashlib
import io
import json
import os
import time

import numpy as np
import pytest

from pipeline.io import outputs, storage
from pipeline.io.manifests import ManifestEntry
from pipeline.io.storage import ReadPolicy
from pipeline.units import RunContext, UnitContext
from tests.conftest import small_png
from tests.httpserver import serve


def local_http(**limits) -> ReadPolicy:
    """A policy for the test server on 127.0.0.1 (loopback addresses are refused by default)."""
    return ReadPolicy(http_allowed_addresses="any", **limits)


FAST_HTTP = local_http(http_timeout=0.5, http_retries=1)


@pytest.fixture(scope="module")
def http():
    with serve(small_png(0)) as (base, hits):
        yield base, hits


def test_local_and_memory_reads(memfs, tmp_path):
    memfs.pipe("/a/b.png", b"abc")
    assert storage.read_bytes("memory://a/b.png") == b"abc"
    (tmp_path / "x.png").write_bytes(b"xyz")
    assert storage.read_bytes(str(tmp_path / "x.png")) == b"xyz"
    assert storage.read_bytes(f"file://{tmp_path}/x.png") == b"xyz"


@pytest.mark.parametrize("uri, scheme", [("ftp://host/a.png", "ftp"), ("simplecache::s3://b/a.png", "simplecache::s3"),
                                         ("data:image/png;base64,AAAA", "data")])
def test_schemes_outside_the_allowed_list_are_refused_before_opening(uri, scheme):
    with pytest.raises(storage.UnsupportedScheme, match=f"scheme '{scheme}' is not allowed") as info:
        storage.read_bytes(uri)
    assert info.value.error_type == "unsupported_scheme"
    with pytest.raises(storage.UnsupportedScheme):
        storage.read_bytes("memory://a/b.png", ReadPolicy(allowed_schemes=("file",)))


def test_size_limit(memfs, tmp_path):
    memfs.pipe("/big.bin", b"x" * 101)
    (tmp_path / "big.bin").write_bytes(b"x" * 101)
    for uri in ("memory://big.bin", str(tmp_path / "big.bin")):
        with pytest.raises(storage.InputTooLarge, match="101 bytes"):
            storage.read_bytes(uri, ReadPolicy(max_bytes=100))
        assert len(storage.read_bytes(uri, ReadPolicy(max_bytes=101))) == 101


def test_missing_files_and_folders(memfs, tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "nope.png"))
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("memory://nope.png")
    (tmp_path / "dir.jpg").mkdir()
    memfs.pipe("/d.jpg/inside.png", b"x")
    for uri in (str(tmp_path / "dir.jpg"), "memory://d.jpg"):
        with pytest.raises(storage.NotAFile):
            storage.read_bytes(uri)


def test_http_ok_404_and_retried_503(http):
    base, hits = http
    assert storage.read_bytes(f"{base}/ok.png", FAST_HTTP) == small_png(0)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{base}/missing.png", FAST_HTTP)
    assert storage.read_bytes(f"{base}/flaky.png", FAST_HTTP) == small_png(0)
    assert hits["/flaky.png"] == 2


def test_http_500_fails_after_bounded_retries(http):
    base, hits = http
    before = hits.get("/error.png", 0)
    with pytest.raises(storage.HTTPStatusError, match="HTTP 500.*after 3 attempts") as info:
        storage.read_bytes(f"{base}/error.png", local_http(http_timeout=1, http_retries=2))
    assert info.value.error_type == "http_error" and hits["/error.png"] - before == 3


def test_http_time_limit_covers_the_body(http):
    base, _ = http
    start = time.perf_counter()
    with pytest.raises(storage.ReadTimeout, match="0.5 s") as info:
        storage.read_bytes(f"{base}/slow.png", local_http(http_timeout=0.5, http_retries=0))
    assert info.value.error_type == "timeout"
    assert time.perf_counter() - start < 1.8  # the server pauses 2 s


def test_http_size_limit_without_content_length(http):
    base, _ = http
    with pytest.raises(storage.InputTooLarge):
        storage.read_bytes(f"{base}/big.png", local_http(max_bytes=2**20, http_timeout=5, http_retries=0))


def test_http_redirects_are_followed_up_to_a_limit(http):
    base, _ = http
    assert storage.read_bytes(f"{base}/redirect/ok.png", FAST_HTTP) == small_png(0)
    with pytest.raises(storage.HTTPStatusError, match=f"more than {storage.HTTP_MAX_REDIRECTS} redirects"):
        storage.read_bytes(f"{base}/loop.png", FAST_HTTP)


def test_loopback_and_link_local_hosts_are_refused_by_default(http):
    base, hits = http
    before = hits.get("/ok.png", 0)
    with pytest.raises(storage.AddressNotAllowed, match="127.0.0.1, a loopback address") as info:
        storage.read_bytes(f"{base}/ok.png")
    assert info.value.error_type == "address_not_allowed" and hits.get("/ok.png", 0) == before  # never connected
    with pytest.raises(storage.AddressNotAllowed, match="localhost is .*, a loopback address"):  # via DNS
        storage.read_bytes(base.replace("127.0.0.1", "localhost") + "/ok.png", ReadPolicy(http_retries=0))
    assert hits.get("/ok.png", 0) == before
    assert storage.read_bytes(base.replace("127.0.0.1", "localhost") + "/ok.png", FAST_HTTP) == small_png(0)
    with pytest.raises(storage.AddressNotAllowed, match="link-local"):
        storage.read_bytes("http://169.254.169.254/computeMetadata/v1/", ReadPolicy(http_retries=0))
    with pytest.raises(storage.AddressNotAllowed, match="private"):
        storage.read_bytes("http://10.0.0.1/a.png", ReadPolicy(http_allowed_addresses="public", http_retries=0))


def test_a_redirect_to_a_refused_address_is_not_followed(http, monkeypatch):
    # The first hop (127.0.0.1) counts as public here; its redirect goes to 127.0.0.2, another loopback
    # address, where nothing listens: only the address check, not the connection, can fail it this way.
    base, _ = http
    real_kind = storage.address_kind
    monkeypatch.setattr(storage, "address_kind", lambda a: "public" if a == "127.0.0.1" else real_kind(a))
    assert storage.read_bytes(f"{base}/ok.png", ReadPolicy(http_retries=0)) == small_png(0)
    with pytest.raises(storage.AddressNotAllowed, match="127.0.0.2, a loopback address"):
        storage.read_bytes(f"{base}/to-loopback-2.png", ReadPolicy(http_retries=0))


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "a.png"
    storage.write_atomic(str(target), b"one")
    storage.write_atomic(str(target), b"two")
    assert target.read_bytes() == b"two" and os.listdir(target.parent) == ["a.png"]


def test_a_write_that_fails_half_way_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """A full disk or a killed worker mid-write must never leave a torn index.html or run record."""
    target = tmp_path / "index.html"
    storage.write_atomic(str(target), b"old page")

    class HalfWrite(io.FileIO):
        def write(self, data):
            super().write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "open", HalfWrite, raising=False)
    with pytest.raises(OSError, match="No space left"):
        storage.write_atomic(str(target), b"new page, longer than the old one")
    assert target.read_bytes() == b"old page" and os.listdir(tmp_path) == ["index.html"]


@pytest.mark.parametrize("identifier", ["../../etc/passwd", "/abs/path", "a/b", "..", ".", "", "x" * 300, "caf\udce9",
                                        "name with spaces é", "C:\\win\\x", "a\0b"])
def test_safe_names_never_leave_their_folder(identifier):
    name = storage.safe_name(identifier)
    assert "/" not in name and "\\" not in name and name not in (".", "..", "") and not name.startswith(".")
    assert len(name) <= storage.MAX_NAME + 9 and name.isascii()


def test_distinct_ids_keep_distinct_names():
    ids = ["a/b", "a_b", "a b", "a:b", "x" * 150, "x" * 151, "a_b-3ec69c85", storage.safe_name("a_b-3ec69c85")]
    assert len({storage.safe_name(i) for i in ids}) == len(ids)
    assert storage.safe_name("plain-id_1.v2") == "plain-id_1.v2"


def test_sidecar_marks_an_output_complete_only_while_it_is_intact(tmp_path):
    uri = str(tmp_path / "images" / "a.png")
    outputs.write_output(uri, b"png bytes", "recipe-1", 3, 4)
    record = json.loads((tmp_path / "images" / "a.png.json").read_text())
    assert record["sha256"] == hashlib.sha256(b"png bytes").hexdigest() and record["size"] == 9
    assert outputs.completed_output(uri, "recipe-1")["height"] == 3
    assert outputs.completed_output(uri, "recipe-2") is None  # other settings or input: redo
    (tmp_path / "images" / "a.png").write_bytes(b"png bytez")  # same size, other bytes
    assert outputs.completed_output(uri, "recipe-1") is None
    (tmp_path / "images" / "a.png").write_bytes(b"png")  # truncated
    assert outputs.completed_output(uri, "recipe-1") is None
    (tmp_path / "images" / "a.png").write_bytes(b"png bytes")
    (tmp_path / "images" / "a.png.json").write_text("{not json")
    assert outputs.completed_output(uri, "recipe-1") is None
    os.remove(tmp_path / "images" / "a.png.json")  # killed between the image and its sidecar
    assert outputs.completed_output(uri, "recipe-1") is None
    assert outputs.completed_output(str(tmp_path / "never.png"), "recipe-1") is None


def test_skip_existing_rehashes_an_input_whose_time_moved_and_redoes_it_when_its_bytes_changed(tmp_path):
    """Same-size edits are ordinary (BMP, PPM, a re-exported JPEG): a moved mtime must lead to a byte check."""
    photo = tmp_path / "a.bmp"
    photo.write_bytes(b"A" * 64)
    units = UnitContext(RunContext("run", str(tmp_path / "out"), skip_existing=True), "classical")
    entry = ManifestEntry("a", str(photo))
    source = units.read(entry)
    output = units.output_uri("a")
    units.write_image(output, np.zeros((2, 3, 3), np.uint8), "recipe", {"content_sha256": source.sha256},
                      {"content": source.fingerprint})
    later = source.fingerprint["modified"] + 10**9

    os.utime(photo, ns=(later, later))  # touched: the same bytes
    skipped = units.completed(units.base(entry), output, "recipe", {"content": entry})
    assert (skipped["status"], skipped["content_sha256"]) == ("skipped", source.sha256)

    photo.write_bytes(b"B" * 64)
    os.utime(photo, ns=(later + 1, later + 1))
    assert units.completed(units.base(entry), output, "recipe", {"content": entry}) is None


def test_recipe_digest_is_stable_and_sensitive():
    from transforms.cartoon import PRESETS

    a = outputs.recipe_digest(method="classical", params=PRESETS["seed"], content_uri="x")
    assert a == outputs.recipe_digest(content_uri="x", params=PRESETS["seed"], method="classical")
    assert a != outputs.recipe_digest(method="classical", params=PRESETS["comic"], content_uri="x")
    assert a != outputs.recipe_digest(method="classical", params=PRESETS["seed"], content_uri="y")
    assert np.char.isalnum(a)


def test_non_regular_files_are_refused_without_opening_them(tmp_path):
    import threading

    os.mkfifo(tmp_path / "fifo.png")
    outcome = []

    def read():
        try:
            storage.read_bytes(str(tmp_path / "fifo.png"))
        except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # it opened the FIFO: let it go, then fail
        with open(tmp_path / "fifo.png", "wb"):
            pass
        pytest.fail("read_bytes opened a FIFO and waited for a writer")
    assert isinstance(outcome[0], storage.NotAFile) and "FIFO" in str(outcome[0])
    with pytest.raises(storage.NotAFile, match="character device"):
        storage.read_bytes("/dev/zero")


def test_every_read_has_a_time_limit(memfs, monkeypatch):
    memfs.pipe("/slow.png", b"x")
    real_open = type(memfs)._open

    def slow_open(self, path, *args, **kwargs):
        time.sleep(3)
        return real_open(self, path, *args, **kwargs)

    monkeypatch.setattr(type(memfs), "_open", slow_open)
    start = time.perf_counter()
    with pytest.raises(storage.ReadTimeout, match="0.2 s") as info:
        storage.read_bytes("memory://slow.png", ReadPolicy(read_timeout=0.2))
    assert info.value.error_type == "timeout" and time.perf_counter() - start < 2
