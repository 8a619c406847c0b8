"""Chunking: sizes, overlap, Markdown headings and fenced code blocks, offsets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.memory.chunking import TOKEN_RE, split_text

MD = """Intro line before any heading.

# Install

Run pip install. Then configure the service and restart it.

## Linux

```bash
sudo apt-get install foo
echo "# not a heading"
make
```

After the code, more words to fill the chunk up a bit with text text text.

# Usage

""" + " ".join(f"word{i}" for i in range(150))


def test_offsets_sizes_and_overlap_in_chars() -> None:
    chunks = split_text(MD, size=120, overlap=30)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert MD[c.start : c.end] == c.text
        assert len(c.text) <= 120
    usage = [c for c in chunks if c.heading == "Usage"]
    assert len(usage) > 3
    for a, b in itertools.pairwise(usage):
        assert b.start < a.end  # overlapping
        assert a.end - b.start <= 30
        assert MD[b.start - 1].isspace()  # starts at a word boundary
    assert "word149" in usage[-1].text
    # every word of the section is in some chunk
    covered = " ".join(c.text for c in usage)
    assert all(f"word{i} " in covered + " " for i in range(150))


def test_headings_paths_and_sections_never_mix() -> None:
    chunks = split_text(MD, size=2000, overlap=0)
    assert [c.heading for c in chunks] == ["", "Install", "Install > Linux", "Usage"]
    assert chunks[1].text.startswith("# Install")
    assert "# not a heading" in chunks[2].text  # a '#' line inside a fence is code


def test_code_fence_is_not_split_when_it_fits() -> None:
    for size in (80, 100, 150):
        chunks = split_text(MD, size=size, overlap=20)
        fenced = [c for c in chunks if "```bash" in c.text]
        assert len(fenced) == 1
        assert fenced[0].text.count("```") == 2  # opening and closing fence together
        # no chunk starts inside the fence through overlap
        assert not any(c.text.startswith(("sudo", "echo", "make")) for c in chunks)


def test_oversized_code_block_splits_on_lines() -> None:
    code = "```\n" + "\n".join(f"line_{i} = {i}" for i in range(40)) + "\n```\n"
    chunks = split_text(code, size=60, overlap=0)
    assert len(chunks) > 3
    for c in chunks:
        assert len(c.text) <= 60
        assert all(line.startswith(("line_", "```")) for line in c.text.splitlines())


def test_token_unit() -> None:
    text = "# T\n\n" + " ".join(f"w{i}, x." for i in range(100))
    chunks = split_text(text, size=50, overlap=10, unit="tokens")
    for c in chunks:
        assert len(TOKEN_RE.findall(c.text)) <= 50
    body = [c for c in chunks if c.index > 0]
    overlaps = [len(TOKEN_RE.findall(text[b.start : a.end])) for a, b in itertools.pairwise(body)]
    assert overlaps and all(0 < o <= 10 for o in overlaps)


def test_plain_text_ignores_markdown_and_long_words_are_cut() -> None:
    chunks = split_text("# not a heading\n\n" + "x" * 250, size=100, overlap=0, markdown=False)
    assert chunks[0].heading == "" and chunks[0].text == "# not a heading"
    assert [len(c.text) for c in chunks[1:]] == [100, 100, 50]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="overlap"):
        split_text("abc", size=10, overlap=10)
    with pytest.raises(ValueError, match="size"):
        split_text("abc", size=0, overlap=0)
    with pytest.raises(ValueError, match="unit"):
        split_text("abc", size=10, overlap=0, unit="bytes")  # type: ignore[arg-type]
    assert split_text("", size=10, overlap=0) == []


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab #`\n.~")), max_size=400),
    size=st.integers(5, 80),
    ratio=st.floats(0, 0.9),
    unit=st.sampled_from(["chars", "tokens"]),
)
def test_properties(text: str, size: int, ratio: float, unit: str) -> None:
    overlap = int(size * ratio)
    chunks = split_text(text, size=size, overlap=overlap, unit=unit)  # type: ignore[arg-type]
    for c in chunks:
        assert text[c.start : c.end] == c.text and c.text.strip() == c.text and c.text
    starts = [c.start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # always progresses
    # nothing but whitespace is lost
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(text[i].isspace() for i in range(len(text)) if i not in covered)
