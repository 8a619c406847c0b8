"""The template sandbox under random method calls (kernel/prompts/sandbox.py), property-based.

Templates call random `str` methods (on the allowlist and outside it, reached as `v.m(...)`,
`v|attr('m')` or `v['m']`) with random arguments (integers up to 10**7, strings up to 10**5
characters, `str.maketrans` tables and dicts with long replacements) on random values (plain
and Markup text up to 3*10**5 characters, tabs, non-ASCII, format fields), and random format
strings with repeated fields for `str.format`, `format_map`, `%` and `|format`. Whatever the
template does, its render either succeeds with output under the sandbox's output bound or
raises a kernel `TemplateError`, never another exception, and its traced peak allocation
stays under PEAK_BOUND_MB: every growing operation was refused before it allocated.
"""

from __future__ import annotations

import traceback
import tracemalloc
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from kernel.errors import TemplateError
from kernel.prompts import TEMPLATES, sandbox
from kernel.prompts.bounds import ALLOWED_ATTRIBUTES, MAX_OUTPUT_CHARS

# The worst peak seen is 33 MiB: splitting a 300,000-character Markup value into as many Markup
# pieces (bounded by the input, about 110 bytes a piece); growing operations stay far below.
PEAK_BOUND_MB = 48.0
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
FUZZ_MORE = settings(FUZZ, max_examples=600)

STR_METHODS = sorted(n for n in dir(str) if not n.startswith("_"))
METHODS = [*STR_METHODS, "striptags", "unescape", "escape", "__mod__", "__class__", "mro", "to_bytes"]
CHARS = ["A", " ", "\t", "\n", "\u00df", "\ufb03", "\u65e5", "\U0001f600", "\x00", "<", '"', "%s", "{0}", "{}",
         "%(a)s", "{a}", "{0!r}", "{0:>9}", "a\tb"]


def big_text(piece: str, count: int) -> str:
    return piece * count


sizes = st.one_of(st.integers(0, 300_000), st.sampled_from([1, 1000, 100_000, 300_000]))
texts = st.one_of(st.text(max_size=12), st.builds(big_text, st.sampled_from(CHARS), sizes))
integers = st.one_of(st.integers(-10, 10), st.integers(-10, 10**7), st.sampled_from([10**6, 10**7, 2**31]))
arguments = st.one_of(integers, texts, st.none(), st.lists(texts, max_size=3), st.dictionaries(integers, texts))
widths = st.one_of(st.integers(-10, 100), st.integers(0, 10**7))
keywords = st.dictionaries(st.sampled_from(["tabsize", "count", "sep", "maxsplit", "keepends"]), integers, max_size=1)
GROWING = ["capitalize", "casefold", "center", "expandtabs", "format", "format_map", "join", "ljust", "lower",
           "replace", "rjust", "swapcase", "title", "translate", "upper", "zfill"]


def plausible(method: str, value: str) -> st.SearchStrategy[tuple[Any, ...]]:
    """Positional arguments `method` takes, often made of `value`'s own characters (so they match)."""
    char = st.sampled_from(sorted(set(value[:40])) or [" "]) | st.sampled_from(CHARS)
    long = st.builds(big_text, char, st.integers(0, 10**5))
    if method in ("center", "ljust", "rjust"):
        return st.tuples(widths, st.sampled_from(["*", " ", "\u65e5"]))
    if method == "zfill":
        return st.tuples(widths)
    if method == "replace":
        return st.tuples(char, long) | st.tuples(char, long, widths) | st.tuples(st.just(""), long)
    if method == "join":
        return st.tuples(st.lists(long, max_size=20))
    if method in ("translate", "maketrans"):  # a dict, a maketrans table or a list, with long entries
        table = st.builds(lambda c, v: {ord(c[0]): v}, char, long) | st.builds(
            lambda c, v: str.maketrans({c[0]: v}), char, long) | st.builds(lambda v: [None] * 65 + [v], long)
        return st.tuples(table)
    if method == "format":
        return st.lists(long | integers, max_size=3).map(tuple)
    if method == "format_map":
        return st.tuples(st.fixed_dictionaries({"a": long}))
    return st.tuples(char) if method in ("split", "rsplit", "partition", "count", "find", "strip") else st.just(())


def call_expression(method: str, access: str) -> str:
    if access == "attr":
        return f"(v|attr({method!r}))(*a, **k)"
    if access == "item":
        return f"v[{method!r}](*a, **k)"
    return f"v.{method}(*a, **k)"


def assert_not_a_size_model_failure(error: TemplateError) -> None:
    """A render error must come from the operation itself (or Jinja), not from the sandbox's
    own size models failing on an input they did not expect (a ValueError in a model would
    otherwise pass as an ordinary render error). A TypeError is what the method raises too."""
    cause = error.__context__  # what the kernel error was translated from
    if cause is None or isinstance(cause, TypeError | SecurityError):
        return
    frame = traceback.extract_tb(cause.__traceback__)[-1]
    in_model = Path(frame.filename) == Path(sandbox.__file__) and frame.name not in ("checked", "call_binop")
    assert not in_model, f"{type(cause).__name__} in the sandbox's {frame.name} (line {frame.lineno}): {cause}"


async def render_and_check(source: str, variables: dict[str, Any]) -> None:
    """Renders `source` in the sandbox: a bounded text or a kernel TemplateError, in bounded memory."""
    tracemalloc.start()
    try:
        try:
            template = TEMPLATES.get(source, "fuzz")
            out = await template.render(variables, {})
        except TemplateError as error:
            assert "out of memory" not in str(error), f"{error} for {source}"  # a MemoryError: unbounded
            assert_not_a_size_model_failure(error)
            out = ""
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert len(out) <= MAX_OUTPUT_CHARS
    assert peak < PEAK_BOUND_MB, f"{peak:.1f} MiB for {source}"


@st.composite
def method_calls(draw: st.DrawFn) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """(value, method, positional arguments, keyword arguments)."""
    value, method = draw(texts), draw(st.sampled_from(GROWING) | st.sampled_from(METHODS))
    if method == "expandtabs":  # its one argument, by position or keyword
        return value, method, *draw(st.tuples(st.tuples(widths), st.just({})) | st.tuples(
            st.just(()), st.fixed_dictionaries({"tabsize": widths})))
    plausible_arguments = st.tuples(plausible(method, value), st.just({}))  # two times in three
    return value, method, *draw(st.one_of(plausible_arguments, plausible_arguments, st.tuples(
        st.lists(arguments, max_size=3).map(tuple), keywords)))


@FUZZ_MORE
@given(call=method_calls(), markup=st.booleans(), access=st.sampled_from(["dot", "dot", "attr", "item"]),
       then=st.sampled_from(["", "|length", ".upper()", "|e|length", "|join(v)|length"]))
# bombs an earlier sandbox let through, always tried first
@example(call=("A" * 300_000, "translate", ({65: "x" * 10**5},), {}), markup=False, access="dot", then="|length")
@example(call=("\t" * 1000, "expandtabs", (), {"tabsize": 10**7}), markup=False, access="dot", then="|length")
@example(call=("{0}" * 300_000, "format", ("x" * 10**5,), {}), markup=True, access="attr", then="|length")
# a long string joined character by character: an object of ~80 bytes per character outside Latin-1
@example(call=("\u65e5" * 300_000, "center", (600_000, "\u65e5"), {}), markup=False, access="dot",
         then="|join(v)|length")
async def test_random_str_method_calls_are_bounded(call: tuple[str, str, tuple[Any, ...], dict[str, Any]],
                                                   markup: bool, access: str, then: str) -> None:
    value, method, args, kwargs = call
    setup = "{% set v = v|e %}" if markup else ""
    await render_and_check(f"{setup}{{{{ {call_expression(method, access)}{then} }}}}",
                           {"v": value, "a": args, "k": kwargs})


fields = st.sampled_from(["{0}", "{}", "{0!r}", "{0!a}", "{a}", "{0:>{1}}", "{0:.{1}f}", "{0:^999999}", "{1:,}",
                          "%s", "%r", "%(a)s", "%(a)r", "%*s", "%.*f", "%999999d", "%c", "-", "%%"])


@FUZZ
@given(pattern=st.lists(fields, min_size=1, max_size=6), repeat=st.integers(1, 3000),
       way=st.sampled_from(["format", "format_map", "%", "|format", "|format(**m)"]),
       value=st.one_of(texts, integers, st.lists(texts, max_size=4), st.floats(allow_nan=False)),
       width=integers)
@example(pattern=["%(a)s"], repeat=1000, way="%", value="A" * 10**5, width=0)
@example(pattern=["{0!r}"], repeat=1000, way="format", value="A" * 10**5, width=0)
async def test_random_format_strings_with_repeated_fields_are_bounded(pattern: list[str], repeat: int, way: str,
                                                                      value: Any, width: int) -> None:
    fmt = "".join(pattern) * repeat
    # positional `%` arguments for every field: a `*` takes the width first
    positional = tuple(a for f in pattern * repeat if f.startswith("%") and f != "%%" and "(" not in f
                       for a in ((width, value) if "*" in f else (value,)))
    expression = {
        "format": "f.format(x, w, a=x)",
        "format_map": "f.format_map(m)",
        "%": "f % m" if "%(" in fmt else "f % t",
        "|format": "f|format(*t)",
        "|format(**m)": "f|format(a=x)",
    }[way]
    await render_and_check(f"{{{{ ({expression})|length }}}}",
                           {"f": fmt, "x": value, "w": width, "m": {"a": value}, "t": positional})


@FUZZ
@given(value=st.one_of(integers, st.floats(allow_nan=False), st.lists(integers, max_size=3),
                       st.dictionaries(st.text(max_size=3), integers, max_size=3)),
       method=st.sampled_from(sorted({n for names in ALLOWED_ATTRIBUTES.values() for n in names}
                                     | {n for t in (int, float, list, dict) for n in dir(t) if not n.startswith("_")})),
       args=st.lists(integers, max_size=2), operator=st.sampled_from(["*", "**", "+", "%", "~"]), other=integers)
@example(value=1, method="to_bytes", args=[10**8, "big"], operator="*", other=1)
@example(value=2**4090, method="bit_length", args=[], operator="*", other=2**31)
async def test_numbers_and_containers_methods_and_operators_are_bounded(value: Any, method: str, args: list[Any],
                                                                        operator: str, other: int) -> None:
    source = (f"{{{{ ((v|attr({method!r}))(*a)|string|length) }}}}|{{{{ (v {operator} o)|string|length }}}}"
              "|{{ ((o * o) * o)|string|length }}")
    await render_and_check(source, {"v": value, "a": args, "o": other})
