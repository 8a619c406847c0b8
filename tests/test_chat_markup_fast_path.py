"""`parse_chat` splits the common prompt (only `<message role="...">text</message>`
elements) without building an XML parser; for every prompt it takes that way, the messages
are exactly those the parser gives, and anything else goes to the parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import TemplateRenderError
from kernel.prompts.markup import _FORBIDDEN, _simple_messages, parse_chat, parsed_messages

PIECES = ["a", "Z", " ", "\n", "\t", "\r", "\r\n", "\xa0", "é", "\u2028", ">", "<", "&", ";", "#", "x", "0", "9",
          "&lt;", "&gt;", "&amp;", "&quot;", "&apos;", "&#34;", "&#39;", "&#x41;", "&#0;", "&#1;", "&#xD800;",
          "&#1114111;", "&#1114112;", "&nbsp;", "&copy;", "]]>", "</message>", "<b>", "<text>", '"', "'", "\x00",
          "\ue000", "\U0001F600"]
ROLES = ["system", "user", "assistant", "developer", "tool", "bot", "User"]

content = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
message = st.tuples(st.sampled_from(ROLES), content).map(lambda rc: f'<message role="{rc[0]}">{rc[1]}</message>')
separator = st.sampled_from(["", "\n", " \n ", "\t", "\xa0", "x", "\n<b>y</b>\n"])
prompt = st.lists(st.tuples(message, separator), min_size=1, max_size=4).map(
    lambda items: "".join(m + s for m, s in items))


def as_data(messages: list) -> list[tuple[str, str, str | None]]:
    return [(m.role, m.content, m.name) for m in messages]


@settings(max_examples=800, deadline=None)
@given(prompt)
def test_parse_chat_gives_what_the_parser_gives(text: str) -> None:
    stripped = text.strip()
    forbidden = _FORBIDDEN.search(stripped) is not None
    try:
        expected = as_data(parsed_messages(stripped, forbidden))
    except TemplateRenderError as exc:
        with pytest.raises(TemplateRenderError, match=re.escape(str(exc))):
            parse_chat(text)
        return
    assert as_data(parse_chat(text)) == expected


@pytest.mark.parametrize("text", [
    '<message role="system">You are helpful.</message>\n'
    '<message role="user">Items:\n- a &lt;b&gt; &amp; &#34;c&#39;</message>',
    '<message role="user">one</message>',
    '<message role="developer">rules</message><message role="assistant">ok</message>',
])
def test_common_prompts_take_the_fast_path(text: str) -> None:
    fast = _simple_messages(text)
    assert fast is not None
    assert as_data(parse_chat(text)) == as_data(parsed_messages(text, forbidden=False))


@pytest.mark.parametrize("text", [
    '<message role="user" name="bob">hi</message>',  # an attribute more
    '<message role="user">a <text>b</text></message>',  # an element inside
    '<message role="tool">x</message>',  # a role the parser path refuses, with its own error
    '<message role="user">a &nbsp; b</message>',  # an entity XML does not know: the prompt is not XML
    '<message role="user">a & b</message>',
    '<message role="user">a\r\nb</message>',  # XML normalises line ends
    'text first <message role="user">a</message>',
])
def test_other_prompts_go_to_the_parser(text: str) -> None:
    assert _simple_messages(text) is None


def test_an_unknown_entity_makes_the_prompt_plain_text_as_before() -> None:
    (only,) = parse_chat('<message role="system">a &nbsp; b</message>')
    assert (only.role, only.content) == ("user", '<message role="system">a \xa0 b</message>')


BENIGN = ["a", "Z", " ", "\n", "\t", "é", ">", ";", "#", "&lt;", "&gt;", "&amp;", "&quot;", "&apos;", "&#34;",
          "&#39;", "&#x41;", "&#1114111;", "\U0001F600", '"', "'"]
benign_message = st.tuples(st.sampled_from(["system", "user", "assistant", "developer"]),
                           st.lists(st.sampled_from(BENIGN), max_size=12).map("".join)).map(
    lambda rc: f'<message role="{rc[0]}">{rc[1]}</message>')


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(benign_message, st.sampled_from(["", "\n", " \n "])), min_size=1, max_size=4).map(
    lambda items: "".join(m + s for m, s in items)))
def test_escaped_values_in_messages_take_the_fast_path_and_match_the_parser(text: str) -> None:
    stripped = text.strip()
    assert _simple_messages(stripped) is not None
    assert as_data(parse_chat(text)) == as_data(parsed_messages(stripped, forbidden=False))
