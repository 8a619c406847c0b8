"""Ingestion is scoped to the folder being ingested: source roots, pruning that touches
nothing else (and says what it removed), links out of the folder, binary files.

The embedding model is the deterministic `HashingEmbedder` of test_memory_ingest; the
store is the real SQLite store.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.sqlite_store import SQLiteVectorStore
from kernel.errors import MemoryStoreError
from kernel.memory import Document, SemanticMemory
from tests.test_memory_ingest import HashingEmbedder


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteVectorStore]:
    s = SQLiteVectorStore(tmp_path / "mem.db")
    yield s
    await s.close()


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


async def stored(store: SQLiteVectorStore, collection: str = "docs") -> list[tuple[str, str, str]]:
    """(root, source, text) of every record, sorted."""
    records = await store.get(collection, await store.list_ids(collection))
    return sorted((str(r.metadata.get("root")), str(r.metadata["source"]), r.text) for r in records)


async def test_ingesting_folder_b_never_deletes_what_folder_a_stored(tmp_path: Path, store: SQLiteVectorStore) -> None:
    a = write(tmp_path / "team_a", {"guide.md": "# Guide\n\nAlpha rockets.\n", "only_a.md": "# A\n\nAlpha.\n"})
    b = write(tmp_path / "team_b", {"guide.md": "# Guide\n\nBeta boats.\n"})
    memory = SemanticMemory(HashingEmbedder(), store)
    first = await memory.ingest(a, "docs")
    second = await memory.ingest(b, "docs")  # another folder, a file of the same name
    assert sorted(text for _, _, text in await stored(store)) == [
        "# A\n\nAlpha.", "# Guide\n\nAlpha rockets.", "# Guide\n\nBeta boats."]
    assert (second.added, second.removed, second.removed_files) == (1, 0, 0)
    assert await stored(store) == [
        ("team_a", "guide.md", "# Guide\n\nAlpha rockets."),
        ("team_a", "only_a.md", "# A\n\nAlpha."),
        ("team_b", "guide.md", "# Guide\n\nBeta boats."),
    ]
    # re-ingesting either folder is idempotent and leaves the other alone
    again = await memory.ingest(a, "docs")
    assert (again.added, again.skipped, again.removed) == (0, first.chunks, 0)
    assert (await memory.ingest(b, "docs")).removed == 0
    assert len(await stored(store)) == 3
    # a filter tells the two guides apart
    assert await store.list_ids("docs", ["source=guide.md", "root=team_b"]) != []


async def test_another_folder_with_the_same_name_is_refused_unless_it_takes_the_name_over(
    tmp_path: Path, store: SQLiteVectorStore
) -> None:
    x = write(tmp_path / "x" / "docs", {"a.md": "# A\n\nfrom x\n", "b.md": "# B\n\nonly in x\n"})
    y = write(tmp_path / "y" / "docs", {"a.md": "# A\n\nfrom y\n"})
    memory = SemanticMemory(HashingEmbedder(), store)
    await memory.ingest(x, "docs")
    before = await stored(store)
    with pytest.raises(MemoryStoreError) as info:
        await memory.ingest(y, "docs")
    message = str(info.value)
    assert "'docs'" in message and str(x.resolve()) in message and str(y) in message
    assert "--as NAME" in message and "--replace" in message
    assert await stored(store) == before  # nothing written, nothing deleted

    # the same folder reached through another path is the same root
    assert (await memory.ingest(tmp_path / "x" / ".." / "x" / "docs", "docs")).added == 0

    # the folder moved: --replace takes the name over, pruning what is not in it any more
    moved = await memory.ingest(y, "docs", replace=True)
    assert (moved.added, moved.removed, moved.removed_files) == (1, 2, 1)
    records = await store.get("docs", await store.list_ids("docs"))
    assert [(r.metadata["source"], r.metadata["root_path"]) for r in records] == [("a.md", str(y.resolve()))]


async def test_pruning_covers_files_gone_from_the_folder_and_only_this_root(
    tmp_path: Path, store: SQLiteVectorStore
) -> None:
    docs = write(tmp_path / "docs", {
        "keep.md": "# Keep\n\nUnchanged text.\n",
        "edit.md": "# Edit\n\nFirst version.\n",
        "gone.md": "# Gone\n\nSoon deleted.\n\n## More\n\nAnother section.\n",
        "sub/deep.txt": "Deep file.\n",
    })
    other = write(tmp_path / "other", {"gone.md": "# Gone\n\nThe other folder's file.\n"})
    memory = SemanticMemory(HashingEmbedder(), store)
    await memory.ingest(docs, "docs")
    await memory.ingest(other, "docs")
    await memory.ingest_documents([Document("gone.md", "An in-memory document.")], "docs")

    (docs / "gone.md").unlink()
    (docs / "sub" / "deep.txt").unlink()
    (docs / "edit.md").write_text("# Edit\n\nSecond version.\n", encoding="utf-8")
    report = await memory.ingest(docs, "docs")
    # edit.md: 1 stale chunk; gone.md: 2 chunks; sub/deep.txt: 1 chunk
    assert (report.files, report.added, report.removed, report.removed_files) == (2, 1, 4, 2)
    assert await stored(store) == [
        ("None", "gone.md", "An in-memory document."),  # documents are not files: untouched
        ("docs", "edit.md", "# Edit\n\nSecond version."),
        ("docs", "keep.md", "# Keep\n\nUnchanged text."),
        ("other", "gone.md", "# Gone\n\nThe other folder's file."),  # another root: untouched
    ]
    kept = await memory.ingest(docs, "docs", prune=False)
    assert kept.removed == 0


async def test_in_memory_documents_never_prune_the_chunks_of_files(tmp_path: Path, store: SQLiteVectorStore) -> None:
    docs = write(tmp_path / "docs", {"guide.md": "# Guide\n\nFrom the file.\n"})
    memory = SemanticMemory(HashingEmbedder(), store)
    await memory.ingest(docs, "docs")
    report = await memory.ingest_documents([Document("guide.md", "From memory.")], "docs")
    assert report.removed == 0
    assert await stored(store) == [
        ("None", "guide.md", "From memory."), ("docs", "guide.md", "# Guide\n\nFrom the file.")]
    # and documents of the same source still replace their own stale chunks
    report = await memory.ingest_documents([Document("guide.md", "From memory, edited.")], "docs")
    assert report.removed == 1
    assert len(await stored(store)) == 2


async def test_one_file_given_prunes_only_that_file_and_keeps_its_source(
    tmp_path: Path, store: SQLiteVectorStore
) -> None:
    docs = write(tmp_path / "docs", {"a.md": "# A\n\nOne.\n", "b.md": "# B\n\nTwo.\n"})
    memory = SemanticMemory(HashingEmbedder(), store)
    await memory.ingest(docs, "docs")
    same = await memory.ingest(docs / "a.md", "docs")  # the same file, alone: the same records
    assert (same.added, same.skipped, same.removed, same.roots) == (0, 1, 0, ("docs",))
    (docs / "a.md").write_text("# A\n\nOne, edited.\n", encoding="utf-8")
    (docs / "b.md").unlink()
    edited = await memory.ingest(docs / "a.md", "docs")
    assert (edited.added, edited.removed, edited.removed_files) == (1, 1, 0)  # b.md is not in scope
    assert [s for _, s, _ in await stored(store)] == ["a.md", "b.md"]


async def test_links_out_of_the_folder_are_not_followed(tmp_path: Path, store: SQLiteVectorStore) -> None:
    outside = write(tmp_path / "outside", {"secret.md": "# Secret\n\nprivate key material\n"})
    docs = write(tmp_path / "docs", {"a.md": "# A\n\nInside.\n"})
    os.symlink(outside / "secret.md", docs / "link.md")
    os.symlink(outside, docs / "linked_dir")
    os.symlink(docs / "a.md", docs / "alias.md")  # inside the folder: the file once, under its own name
    os.symlink(docs, docs / "loop")  # a loop
    os.symlink(tmp_path / "nowhere.md", docs / "broken.md")
    memory = SemanticMemory(HashingEmbedder(), store)
    report = await memory.ingest(docs, "docs")
    assert await stored(store) == [("docs", "a.md", "# A\n\nInside.")]
    reasons = {Path(f.path).name: f.reason for f in report.skipped_files}
    assert set(reasons) == {"link.md", "linked_dir", "broken.md"}
    assert "out of" in reasons["link.md"] and "follow_links" in reasons["link.md"]
    assert "broken" in reasons["broken.md"]

    followed = await memory.ingest(docs, "docs", follow_links=True)
    assert {Path(f.path).name for f in followed.skipped_files} == {"broken.md"}
    sources = [s for _, s, _ in await stored(store)]
    # the secret is one file reached twice: stored once, under a path inside the folder
    assert sources in (["a.md", "link.md"], ["a.md", "linked_dir/secret.md"])
    assert not any(s.startswith("/") or ".." in s for s in sources)


async def test_binary_files_are_skipped_with_a_reason(tmp_path: Path, store: SQLiteVectorStore) -> None:
    rng = random.Random(7)
    noise = bytes(rng.choice(range(128, 256)) for _ in range(4000))  # no NUL, not UTF-8
    docs = write(tmp_path / "docs", {
        "text.md": "# Text\n\nPlain words.\n",
        "image.md": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
        "noise.txt": noise,
        "latin1.txt": "Un caf\u00e9 tr\u00e8s l\u00e9ger, pr\u00e8s de la gare.\n".encode("latin-1"),
    })
    memory = SemanticMemory(HashingEmbedder(), store)
    report = await memory.ingest(docs, "docs")
    assert [s for _, s, _ in await stored(store)] == ["latin1.txt", "text.md"]  # a few odd bytes are text
    assert sorted(Path(f.path).name for f in report.skipped_files) == ["image.md", "noise.txt"]
    assert all("binary" in f.reason for f in report.skipped_files)
    assert report.files == 2


def test_cli_ingest_of_two_folders_reports_pruning_and_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kernel.cli import main

    a = write(tmp_path / "a" / "docs", {"guide.md": "# Guide\n\nAlpha.\n", "old.md": "# Old\n\nStale.\n"})
    b = write(tmp_path / "b" / "docs", {"guide.md": "# Guide\n\nBeta.\n", "pic.md": b"\x00\x01binary"})

    def configure(kernel: Any) -> None:
        kernel.services.add_service("hash", HashingEmbedder(), kind="embedding")
        kernel.services.add_service("mem", SQLiteVectorStore(tmp_path / "cli.db"), kind="memory")

    def run(*argv: str, code: int = 0) -> tuple[str, str]:
        assert main(list(argv), configure=configure) == code
        captured = capsys.readouterr()
        return captured.out, captured.err

    out, _ = run("memory", "ingest", str(a), "--json")
    assert json.loads(out)["roots"] == ["docs"]
    # b/docs has the same folder name: refused with advice that loses nothing
    _, err = run("memory", "ingest", str(b), code=1)
    assert "--as NAME" in err and "--replace" in err
    out, err = run("memory", "ingest", str(b), "--as", "docs-b", "--json")
    report = json.loads(out)
    assert (report["roots"], report["added"], report["removed"], report["removed_files"]) == (["docs-b"], 1, 0, 0)
    assert report["skipped_files"] == [{"path": str(b / "pic.md"), "reason": "a binary file (or not UTF-8 text)"}]
    assert f"warning: skipped {b / 'pic.md'}" in err
    (a / "old.md").unlink()
    out, _ = run("memory", "ingest", str(a))
    assert "1 file(s) of 'docs'" in out and "1 removed (1 file(s) no longer present)" in out
    hits = json.loads(run("memory", "search", "guide", "-k", "9", "--mode", "keyword", "--json")[0])
    assert sorted((h["metadata"]["root"], h["reference"]) for h in hits) == [
        ("docs", "guide.md#Guide"), ("docs-b", "guide.md#Guide")]
    _, err = run("memory", "ingest", str(a), str(b), "--as", "x", code=2)
    assert "--as" in err


async def test_nested_roots_and_bad_names_are_refused_before_anything_is_written(
    tmp_path: Path, store: SQLiteVectorStore
) -> None:
    docs = write(tmp_path / "docs", {"a.md": "# A\n\nTop.\n", "sub/b.md": "# B\n\nNested.\n"})
    memory = SemanticMemory(HashingEmbedder(), store)
    with pytest.raises(MemoryStoreError, match="lies inside"):
        await memory.ingest([docs, docs / "sub"], "docs")
    for bad in ("", "a/b", "..", "."):
        with pytest.raises(MemoryStoreError, match="invalid source root name"):
            await memory.ingest(docs, "docs", source_root=bad)
    with pytest.raises(MemoryStoreError, match="one path"):
        await memory.ingest([docs / "a.md", docs / "sub" / "b.md"], "docs", source_root="x")
    assert "docs" not in await store.list_collections()
    # a folder and a file inside it are one root
    report = await memory.ingest([docs, docs / "a.md"], "docs")
    assert (report.roots, report.files) == (("docs",), 2)
