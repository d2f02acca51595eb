import io
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io.manifests import ManifestEntry, ManifestError, load_manifest, read_manifest
from pipeline.io.manifests import ReadManifest




def _read_in_pipeline(spec, expected):
    with TestPipeline() as p:
        entries = p | ReadManifest(spec) | beam.Map(lambda e: (e.id, e.uri, e.error))
        assert_that(entries, equal_to(expected))


@pytest.fixture
def catalog(memfs):
    for name in ["a.png", "b.jpg", "sub/c.webp", "notes.txt"]:
        memfs.pipe(f"/cat/{name}", b"x")
    return memfs


def test_folder_is_searched_recursively_for_images(catalog):
    _read_in_pipeline(
        "memory://cat",
        [("a", "memory:///cat/a.png", None), ("b", "memory:///cat/b.jpg", None), ("c", "memory:///cat/sub/c.webp", None)],
    )


def test_glob(catalog):
    _read_in_pipeline("memory://cat/*.png", [("a", "memory:///cat/a.png", None)])


def test_text_manifest_skips_blanks_and_comments_and_resolves_relative_uris(memfs):
    memfs.pipe("/m/list.txt", b"# the seed's input/content.txt format\n\nimgs/one.png\n  https://example.com/two.jpg?x=1  \n")
    _read_in_pipeline(
        "memory://m/list.txt",
        [("one", "memory:///m/imgs/one.png", None), ("two", "https://example.com/two.jpg?x=1", None)],
    )


def test_csv_manifest_with_ids(memfs):
    memfs.pipe("/m/list.csv", b"id,uri,extra\nfirst,/abs/1.png,x\n,rel/2.png,y\n")
    _read_in_pipeline("memory://m/list.csv", [("first", "/abs/1.png", None), ("2", "memory:///m/rel/2.png", None)])


def test_jsonl_manifest(memfs):
    rows = [{"id": "j1", "uri": "gs://bucket/p.png"}, {"uri": "s3://b/q.jpg"}]
    memfs.pipe("/m/list.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    _read_in_pipeline("memory://m/list.jsonl", [("j1", "gs://bucket/p.png", None), ("q", "s3://b/q.jpg", None)])


def test_parquet_manifest(memfs):
    buf = io.BytesIO()
    pq.write_table(pa.table({"uri": ["memory:///x/p1.png", "memory:///x/p2.png"], "id": ["one", None]}), buf)
    memfs.pipe("/m/list.parquet", buf.getvalue())
    _read_in_pipeline("memory://m/list.parquet", [("one", "memory:///x/p1.png", None), ("p2", "memory:///x/p2.png", None)])


def test_duplicate_ids_become_error_entries(memfs):
    memfs.pipe("/m/list.txt", b"a/x.png\nb/x.png\n")
    entries = list(read_manifest("memory://m/list.txt"))
    assert entries[0] == ManifestEntry("x", "memory:///m/a/x.png")
    assert entries[1].id == "x" and "duplicate id 'x'" in entries[1].error


@pytest.mark.parametrize(
    "path, content, message",
    [
        ("/m/missing.txt", None, "does not exist"),
        ("/m/empty.txt", b"# nothing\n\n", "no images found"),
        ("/m/nouri.csv", b"path\n/a.png\n", "no 'uri' column"),
        ("/m/list.xlsx", b"?", "unknown manifest format"),
    ],
)
def test_unusable_manifests_fail_before_any_work(memfs, path, content, message):
    if content is not None:
        memfs.pipe(path, content)
    with pytest.raises(ManifestError, match=message):
        load_manifest(f"memory://{path}")


# --- Manifests a catalog meets (issue 6) ------------------------------------------------------------


def test_text_manifest_with_blank_lines_crlf_and_non_utf8_bytes(memfs):
    memfs.pipe("/m/list.txt", b"\r\n  \r\na.png\r\n\r\ncaf\xe9.png\r\n\t\r\n")
    entries = list(read_manifest("memory://m/list.txt"))
    assert [e.id for e in entries] == ["a", "caf\udce9"]  # the byte survives as a surrogate escape
    assert entries[1].uri.encode("utf-8", "surrogateescape").endswith(b"caf\xe9.png")
    assert entries[1].row == {"uri": "caf\udce9.png"} and entries[1].error is None


def test_csv_with_a_byte_order_mark(memfs):
    memfs.pipe("/m/list.csv", "\ufeffuri,id\r\nx.png,first\r\n\r\n".encode())
    assert [(e.id, e.uri) for e in read_manifest("memory://m/list.csv")] == [("first", "memory:///m/x.png")]


def test_entries_keep_their_manifest_row_for_the_dead_letters(memfs):
    memfs.pipe("/m/list.csv", b"id,uri,owner\nk1,a.png,ann\n")
    memfs.pipe("/d/b.png", b"x")
    (entry,) = read_manifest("memory://m/list.csv")
    assert entry.row == {"id": "k1", "uri": "a.png", "owner": "ann"}
    (entry,) = read_manifest("memory://d")
    assert entry.row == {"uri": "memory:///d/b.png"}


def test_jsonl_lines_that_are_not_objects_become_error_entries(memfs):
    memfs.pipe("/m/list.jsonl", b'{"uri": "a.png"}\n{"uri": "b.png"\n[1, 2]\n\n{"id": "c"}\n')
    entries = list(read_manifest("memory://m/list.jsonl"))
    assert [(e.id, e.error is None) for e in entries] == [("a", True), ("", False), ("", False), ("c", False)]
    assert "line 2 is not valid JSON" in entries[1].error and entries[1].row == {"line": '{"uri": "b.png"'}
    assert "line 3 is not a JSON object" in entries[2].error
    assert "row 4 has no uri" in entries[3].error


@pytest.mark.parametrize(
    "path, content, message",
    [
        ("/m/list.jsonl", b"id,uri\na,b.png\n", "not JSON lines"),
        ("/m/list.parquet", b"PAR1 this is not parquet", "cannot read as Parquet"),
        ("/m/list.csv", b"", "no 'uri' column"),
    ],
)
def test_more_unusable_manifests(memfs, path, content, message):
    memfs.pipe(path, content)
    with pytest.raises(ManifestError, match=message):
        load_manifest(f"memory://{path}")


# --- Folder inputs: symbolic links and the run's own output (issue 10) -------------------------------

from pipeline.io.manifests import ManifestRules


def test_folder_symlinks_that_lead_outside_are_refused_unless_followed(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    (folder / "inside.png").symlink_to(folder / "a.png")
    (folder / "outside.png").symlink_to(tmp_path / "secret.png")
    entries = {e.id: e for e in read_manifest(str(folder))}
    assert entries["a"].error is None and entries["inside"].error is None
    assert entries["outside"].error_type == "symlink_refused"
    assert f"a symbolic link to {tmp_path / 'secret.png'}, outside the folder" in entries["outside"].error
    followed = {e.id: e for e in read_manifest(str(folder), ManifestRules(follow_symlinks=True))}
    assert followed["outside"].error is None


def test_folders_and_globs_never_yield_the_output(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "out" / "images" / "classical").mkdir(parents=True)
    (tmp_path / "out" / "images" / "classical" / "a.png").write_bytes(b"x")
    (tmp_path / "out2.png").write_bytes(b"x")  # beside the output, not in it
    rules = ManifestRules(exclude=str(tmp_path / "out"))
    assert sorted(e.uri for e in read_manifest(str(tmp_path), rules)) == [str(tmp_path / "a.png"), str(tmp_path / "out2.png")]
    assert [e.id for e in read_manifest(str(tmp_path / "**" / "a.png"), rules)] == ["a"]
    assert len(list(read_manifest(str(tmp_path)))) == 3  # without the rule


def test_ids_that_would_share_a_file_name_become_error_entries(memfs, monkeypatch):
    from pipeline.io import storage

    memfs.pipe("/m/list.jsonl", b'{"id": "x", "uri": "a.png"}\n{"id": "y", "uri": "b.png"}\n')
    monkeypatch.setattr(storage, "safe_name", lambda identifier: "same")  # as a digest collision would
    entries = list(read_manifest("memory://m/list.jsonl"))
    assert entries[0].error is None
    assert entries[1].error == "id 'y' would be written as 'same', the file name of id 'x'"
