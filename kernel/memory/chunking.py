"""Splitting documents into chunks for embedding.

Sizes count characters (`unit="chars"`) or approximate tokens (`unit="tokens"`: words and
punctuation marks, the regex `\\w+|[^\\w\\s]`, about 1.3 per English word of a BPE model).

Markdown is split on headings first: a chunk never spans two sections, and carries its
heading path (`"Install > Linux"`). Inside a section, text is packed from whole blocks
(paragraphs and fenced code blocks); a block too large for one chunk is split on lines,
then sentences, then words, and a fenced code block only on its lines. Consecutive
chunks of a section overlap by about `overlap` units, starting at a word boundary and
never inside a code block.

Every chunk keeps its character offsets: `text[chunk.start:chunk.end] == chunk.text`.

`chunk_documents` turns documents into the records ingestion stores (content-hash ids,
metadata), as plain data: the one implementation `SemanticMemory` runs in process, or
hands to a `Chunker` running it elsewhere (`kernel.batch`: on Ray workers).

Files to ingest: `find_files` walks folders (names starting with `.` left out; symbolic
links leading out of the folder skipped unless `follow_links`; each real file once) and
`decode_text` tells text from binary (a NUL byte, or mostly not UTF-8).
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .types import content_id

Unit = Literal["chars", "tokens"]
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_WORD_RE = re.compile(r"\S+")
_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".text")


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    index: int
    start: int
    end: int
    heading: str = ""


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    code: bool = False


class _Measure:
    """Size of `text[a:b]` in the chosen unit, in O(log n)."""

    def __init__(self, text: str, unit: Unit) -> None:
        if unit not in ("chars", "tokens"):
            raise ValueError(f"unknown chunk unit {unit!r}; expected 'chars' or 'tokens'")
        self.unit = unit
        pattern = TOKEN_RE if unit == "tokens" else _WORD_RE
        found = list(pattern.finditer(text))
        self.starts = [m.start() for m in found]
        self.ends = [m.end() for m in found]

    def size(self, a: int, b: int) -> int:
        if self.unit == "chars":
            return b - a
        # tokens fully inside [a, b)
        first = bisect.bisect_left(self.starts, a)
        last = bisect.bisect_right(self.ends, b)
        return max(0, last - first)

    def back(self, end: int, amount: int, floor: int) -> int:
        """A start position about `amount` units before `end`, at a word/token start."""
        if amount <= 0:
            return end
        target = end - amount if self.unit == "chars" else None
        if target is not None:
            i = bisect.bisect_left(self.starts, max(target, floor))
        else:
            i = bisect.bisect_left(self.starts, end) - amount
            i = max(i, bisect.bisect_left(self.starts, floor))
        return self.starts[i] if i < len(self.starts) and self.starts[i] < end else end


def sections(text: str, markdown: bool = True) -> list[tuple[str, _Span, list[_Span]]]:
    """(heading path, section span, blocks) for each section of `text`."""
    lines = text.splitlines(keepends=True)
    out: list[tuple[str, _Span, list[_Span]]] = []
    path: list[tuple[int, str]] = []
    heading = ""
    sec_start = 0
    blocks: list[_Span] = []
    para_start: int | None = None
    fence: str | None = None
    fence_start = 0
    pos = 0

    def close_para(at: int) -> None:
        nonlocal para_start
        if para_start is not None:
            blocks.append(_Span(para_start, at))
            para_start = None

    for line in lines:
        end = pos + len(line)
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                blocks.append(_Span(fence_start, end, code=True))
                fence = None
            pos = end
            continue
        m_fence = _FENCE_RE.match(line) if markdown else None
        m_head = _HEADING_RE.match(line.rstrip("\r\n")) if markdown else None
        if m_fence:
            close_para(pos)
            fence, fence_start = m_fence.group(1), pos
        elif m_head:
            close_para(pos)
            if blocks:
                out.append((heading, _Span(sec_start, pos), blocks))
            level = len(m_head.group(1))
            path = [p for p in path if p[0] < level] + [(level, m_head.group(2).strip())]
            heading = " > ".join(p[1] for p in path)
            sec_start = pos
            blocks = [_Span(pos, end)]
        elif not stripped:
            close_para(pos)
        elif para_start is None:
            para_start = pos
        pos = end
    if fence is not None:  # unterminated fence: code to the end
        blocks.append(_Span(fence_start, pos, code=True))
    close_para(pos)
    if blocks:
        out.append((heading, _Span(sec_start, pos), blocks))
    return out


def _split_block(text: str, span: _Span, size: int, m: _Measure) -> list[_Span]:
    """Split one block into pieces of at most `size` units (hard cuts only as a last resort)."""
    if m.size(span.start, span.end) <= size:
        return [span]
    separators: list[re.Pattern[str]] = [re.compile(r"\n")]
    if not span.code:
        separators += [_SENTENCE_END, re.compile(r"\s+")]
    for sep in separators:
        cuts = [mt.end() for mt in sep.finditer(text, span.start, span.end)]
        cuts = [c for c in cuts if span.start < c < span.end]
        if not cuts:
            continue
        pieces: list[_Span] = []
        a = span.start
        for c in [*cuts, span.end]:
            pieces.append(_Span(a, c, span.code))
            a = c
        out: list[_Span] = []
        for p in pieces:
            out.extend(_split_block(text, p, size, m))
        return out
    # no separator left: cut at `size` characters (or tokens)
    out, a = [], span.start
    while a < span.end:
        b = a + size
        if m.unit == "tokens":
            i = bisect.bisect_left(m.starts, a) + size
            b = m.starts[i] if i < len(m.starts) else span.end
        b = min(max(b, a + 1), span.end)
        out.append(_Span(a, b, span.code))
        a = b
    return out


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def check_chunking(size: int, overlap: int, unit: str) -> None:
    """Raise ValueError unless `size`, `overlap` and `unit` are valid for `split_text`."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    if overlap < 0 or overlap >= size:
        raise ValueError(f"chunk overlap must be in [0, size), got {overlap} with size {size}")
    if unit not in ("chars", "tokens"):
        raise ValueError(f"unknown chunk unit {unit!r}; expected 'chars' or 'tokens'")


def split_text(
    text: str,
    size: int = 1000,
    overlap: int = 100,
    unit: Unit = "chars",
    markdown: bool = True,
) -> list[Chunk]:
    """Chunks of `text` of at most `size` units (see the module docstring)."""
    check_chunking(size, overlap, unit)
    m = _Measure(text, unit)
    chunks: list[Chunk] = []
    for heading, _section, blocks in sections(text, markdown):
        pieces: list[_Span] = []
        for block in blocks:
            pieces.extend(_split_block(text, block, size, m))
        code = [p for p in pieces if p.code]
        i = 0
        prev_end: int | None = None
        while i < len(pieces):
            start = pieces[i].start
            if prev_end is not None and overlap:
                s = m.back(prev_end, overlap, floor=chunks[-1].start + 1 if chunks else 0)
                inside = next((c for c in code if c.start < s < c.end), None)
                if inside is not None:
                    s = inside.end
                if s < start and m.size(s, pieces[i].end) <= size:
                    start = s
            end = pieces[i].end
            i += 1
            while i < len(pieces) and m.size(start, pieces[i].end) <= size:
                end = pieces[i].end
                i += 1
            a, b = _strip(text, start, end)
            if a < b:
                chunks.append(Chunk(text[a:b], len(chunks), a, b, heading))
            prev_end = end
    return chunks


class ChunkSource(NamedTuple):
    """A document to chunk, as plain data: its `source` name, its text, the metadata its
    chunks carry, whether it is markdown, and the `key` its record ids hash (`root/path`
    for a file, the source for an in-memory document)."""

    source: str
    text: str
    metadata: Mapping[str, Any] | None
    markdown: bool
    key: str


ChunkedRecord = tuple[str, str, dict[str, Any]]
"""One chunk as ingestion stores it: (record id, text, metadata)."""

Chunker = Callable[[Sequence[ChunkSource], int, int, Unit], Awaitable[list[list[ChunkedRecord]]]]
"""Runs `chunk_documents(documents, chunk_size, overlap, unit)`, here or elsewhere: the
records of each document, in the documents' order."""


def chunk_document(doc: ChunkSource, chunk_size: int, overlap: int, unit: Unit) -> list[ChunkedRecord]:
    """The records of one document: id `content_id(text, key)`, the document's metadata
    with `source`, `chunk`, `start`, `end`, `heading` and `content_hash`. A text found
    twice in the document is kept once (its first chunk)."""
    source, text, metadata, markdown, key = doc
    records: list[ChunkedRecord] = []
    seen: set[str] = set()
    for chunk in split_text(text, chunk_size, overlap, unit, markdown):
        rid = content_id(chunk.text, key)
        if rid in seen:
            continue
        seen.add(rid)
        meta: dict[str, Any] = dict(metadata or {})
        meta.update(source=source, chunk=chunk.index, start=chunk.start, end=chunk.end, heading=chunk.heading,
                    content_hash=content_id(chunk.text))
        records.append((rid, chunk.text, meta))
    return records


def chunk_documents(docs: Iterable[ChunkSource], chunk_size: int, overlap: int,
                    unit: Unit) -> list[list[ChunkedRecord]]:
    """`chunk_document` of each document, in order (pure: plain data in and out)."""
    return [chunk_document(ChunkSource(*doc), chunk_size, overlap, unit) for doc in docs]


async def chunk_here(docs: Sequence[ChunkSource], chunk_size: int, overlap: int,
                     unit: Unit) -> list[list[ChunkedRecord]]:
    """The default `Chunker`: `chunk_documents` in this process."""
    return chunk_documents(docs, chunk_size, overlap, unit)


def load_text(path: Path) -> str:
    """The text of a .md/.txt file (UTF-8, undecodable bytes replaced)."""
    return path.read_text(encoding="utf-8", errors="replace")


_SNIFF = 8192
_MAX_UNDECODABLE = 0.3


def decode_text(data: bytes) -> str | None:
    """`data` as text (UTF-8, the odd undecodable byte replaced), or None when it is binary:
    a NUL byte in its first 8 KiB, or more than 30% of it not UTF-8 (Latin-1 text, with
    its odd accented letter replaced, is text)."""
    if b"\0" in data[:_SNIFF]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    return None if bad > _MAX_UNDECODABLE * max(1, len(text)) else text


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A file to ingest: `rel` is its path under `root` (the folder given, or the folder of
    a file given), with `/` separators."""

    path: Path
    rel: str
    root: Path


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file or link not ingested, and why."""

    path: str
    reason: str


def find_files(
    paths: list[Path], suffixes: tuple[str, ...] = TEXT_SUFFIXES, *, follow_links: bool = False
) -> tuple[list[FoundFile], list[SkippedFile]]:
    """The text files under `paths` (files or folders), sorted, each real file once, and the
    links that were not followed.

    In a folder, names starting with `.` are left out, and so is any symbolic link whose
    target lies outside the folder, unless `follow_links` (then linked folders are walked
    too, each real folder once: a link loop ends). A link inside the folder is not walked
    (its target is, under its own path). A path given by name is always read.
    """
    found: list[FoundFile] = []
    skipped: list[SkippedFile] = []
    for p in paths:
        if p.is_dir():
            _walk(p, suffixes, follow_links, found, skipped)
        elif p.is_file():
            found.append(FoundFile(p, p.name, p.parent))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    best: dict[Path, FoundFile] = {}
    for f in sorted(found, key=lambda f: (f.root.as_posix(), f.rel)):
        real = f.path.resolve()
        kept = best.get(real)
        # the same file reached twice: keep the path it really has under its root
        if kept is None or (not _at_home(kept) and _at_home(f)):
            best[real] = f
    return sorted(best.values(), key=lambda f: (f.root.as_posix(), f.rel)), skipped


def _at_home(f: FoundFile) -> bool:
    return f.path.resolve() == f.root.resolve() / f.rel


def _walk(
    root: Path, suffixes: tuple[str, ...], follow: bool, found: list[FoundFile], skipped: list[SkippedFile]
) -> None:
    home = root.resolve()
    walked = {home}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:  # an error, not a skip: pruning would drop what the folder holds
            from ..errors import MemoryStoreError

            raise MemoryStoreError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, rel = Path(entry.path), prefix + entry.name
            if entry.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    skipped.append(SkippedFile(str(path), "a broken symbolic link"))
                    continue
                if not follow:
                    if not target.is_relative_to(home):
                        skipped.append(SkippedFile(str(path), f"a symbolic link out of {root} (to {target}); "
                                                   "not followed (--follow-links, follow_links=True)"))
                        continue
                    if target.is_dir():
                        continue  # walked under its own path
            if entry.is_dir():
                real = path.resolve()
                if real not in walked:
                    walked.add(real)
                    stack.append((path, rel + "/"))
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in suffixes:
                found.append(FoundFile(path, rel, root))
