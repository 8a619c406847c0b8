"""How kernel functions meet a model as tools: which functions are offered, the spec each
is offered as, the policy of the loop, what the model's calls are checked against (ids,
Unicode, JSON arguments), where model-called sync functions run (worker threads, under the
tool timeout), and the text a tool call answers with (results as text cut to
`max_result_chars`; errors short and safe: secrets masked, paths and addresses stripped,
no traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import os
import queue
import re
import threading
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_json

from ..contents import ChatMessage, ToolCall, ToolSpec
from ..errors import ConfigurationError, FunctionNotFoundError, FunctionTimeoutError
from ..functions import SYNC_RUNNER, FunctionResult, KernelFunction
from ..logging import mask_text
from ..settings import ToolLoopSettings

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["DECLINED", "NO_APPROVER", "resolve_policy", "result_text", "select_functions", "short_error", "tool_spec"]

DECLINED = "error: the user declined this call; it was not run"
NO_APPROVER = "error: this function needs the user's approval and no approval callback is configured; it was not run"
MAX_ERROR_CHARS = 400
MAX_DEPTH = 32  # nesting levels of a call's JSON arguments (objects and arrays)
MAX_INT_DIGITS = 100  # digits of one integer in a call's JSON arguments
MAX_TOOL_THREADS = 16  # worker threads for model-called sync functions, in the whole process
MASK_SLACK = 4096  # a cut result is masked over this many characters past the cut

_SPECS: weakref.WeakKeyDictionary[KernelFunction, ToolSpec] = weakref.WeakKeyDictionary()


def tool_spec(function: KernelFunction) -> ToolSpec:
    """The ToolSpec a function is offered as (cached per function object)."""
    spec = _SPECS.get(function)
    if spec is None:
        spec = _SPECS[function] = ToolSpec(function.tool_name, function.description, function.parameters_schema)
    return spec


# --- error texts: short and safe ----------------------------------------------------------

_SEG = r"""[^\s/\\'"`<>|:;,()\[\]{}*?]+"""
_URL = re.compile(r"(?<![\w.+-])[A-Za-z][\w+.-]*://[^\s'\"`<>]*[^\s'\"`<>.,;:!?)\]]")
_START = r"(?:(?<=[\s'\"`(\[{=,;:|])|^)"  # where a token starts: no scanning inside tokens
# A run of path segments; a segment may hold spaces when a separator follows it
# (`/home/me/My Documents/a.txt`); judged by _path_or_not.
_PATH = re.compile(
    rf"{_START}(?:[A-Za-z]:|~)?(?:{_SEG})?(?:[/\\]+(?:{_SEG}(?: (?![.~]){_SEG})*(?=[/\\])|{_SEG})?)+"
)
# File-like extensions (not `log`, `key`, `lock`, `pid`: `math.log`, `self.lock` are names).
_EXT = (
    "py|pyc|pyd|pyi|pyw|ipynb|so|dll|dylib|exe|sh|bash|zsh|bat|cmd|ps1|js|mjs|cjs|ts|rb|go|rs|java|jar|"
    "cpp|hpp|php|toml|yaml|yml|json|jsonl|ndjson|ini|cfg|conf|env|properties|xml|html|htm|md|rst|txt|"
    "csv|tsv|parquet|db|sqlite|sqlite3|sql|pem|crt|cer|der|p12|pfx|gpg|asc|kdbx|pkl|pickle|npy|npz|"
    "bin|gguf|safetensors|onnx|zip|gz|tgz|tar|bz2|xz|7z|whl|egg|bak|tmp|swp|sock|prompt|j2|jinja|"
    "jinja2|doc|docx|xls|xlsx|ppt|pptx|pdf|png|jpg|jpeg|gif|svg"
)
_FILE = re.compile(
    rf"{_START}(?:\w[\w.+-]*)?\.(?:{_EXT}|{_EXT.upper()})(?![\w-]|\.\w)"
    rf"|{_START}\.(?:netrc|pgpass|npmrc|pypirc|git-credentials|bashrc|zshrc|profile|ssh|aws|kube|docker)"
    r"(?![\w-])"
)
_ADDRESS = re.compile(
    r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%\w+)?\](?::\d{1,5})?"  # [::1]:8080
    r"|(?<![\w.:])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?!\d|\.\d)"  # 10.0.0.5:5432, 127.0.0.1
    r"|(?<![\w:])(?=[0-9A-Fa-f:]*[0-9A-Fa-f])[0-9A-Fa-f:]*::[0-9A-Fa-f:]*(?:%\w+)?(?![\w:])"  # ::1, fe80::1
    r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"  # a full IPv6 address
    r"|(?<![\w.<>-])[A-Za-z][\w-]*(?:\.[\w-]+)*:\d{1,5}(?!\d)"  # db.internal:5432, localhost:80
)
_PATHS = re.compile(r"<path>(?:\s*<path>)+")


def _path_or_not(match: re.Match[str], keep: Collection[str]) -> str:
    """A separator run is a path when it is absolute (`/x`, `C:\\x`, `~/x`, `\\\\host`),
    starts with `./` or `../`, has two separators and a letter (`a/b/c`), or ends in a
    file name (`dir/x.py`); `and/or`, `application/json` or `HTTP/1.1` stay."""
    token = match.group()
    if token in keep or not re.search(r"\w", token):
        return token
    if token[0] in "/\\~" or token.startswith(("./", "../", ".\\", "..\\")) or re.match(r"[A-Za-z]:[/\\]", token):
        return "<path>"
    parts = re.split(r"[/\\]+", token)
    if (len(parts) > 2 and re.search(r"[A-Za-z]", token)) or re.search(r"\.[A-Za-z]\w*$", parts[-1]):
        return "<path>"
    return token


def short_error(text: str, keep: Collection[str] = ()) -> str:
    """A short, safe error text for the model: one line, secrets masked, no traceback, at
    most MAX_ERROR_CHARS characters; URLs become `<url>`, file paths (absolute, relative,
    file names such as `settings.toml`, with spaces) `<path>`, IP addresses and
    `host:port` `<address>`. Tokens in `keep` (function names) stay as they are."""
    cut = text.find("Traceback (most recent call last)")
    if cut >= 0:
        text = text[:cut]
    line = mask_text(" ".join(text.split()) or "failed")[: MAX_ERROR_CHARS * 10]
    line = _URL.sub("<url>", line)
    line = _PATH.sub(lambda m: _path_or_not(m, keep), line)
    line = _FILE.sub(lambda m: m.group() if m.group() in keep else "<path>", line)
    line = _ADDRESS.sub(lambda m: m.group() if m.group() in keep else "<address>", line)
    line = valid_unicode(_PATHS.sub("<path>", line))
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 3] + "..."
    return "error: " + line


# --- results: text, cut, valid Unicode ----------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """`text` with lone surrogates (which no UTF-8 request body can carry) as U+FFFD."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


def result_text(value: Any) -> str:
    """Tool results are strings: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return to_json(value, fallback=str).decode()


def cut_note(total: int, shown: int) -> str:
    return f"\n... [cut: the result had {total} characters; the first {shown} are shown]"


def cut_result(text: str, limit: int) -> str:
    """`text` when it has at most `limit` characters; else its start and a note for the
    model, `limit` characters in all."""
    if len(text) <= limit:
        return text
    shown = max(0, limit - len(cut_note(len(text), limit)))
    return text[:shown] + cut_note(len(text), shown)


def safe_result(value: Any, limit: int) -> str:
    """A function's value as the tool result: text, secrets masked, cut to `limit`
    characters. A long text is cut before it is masked (masking 100 MB holds the event
    loop for seconds), with MASK_SLACK characters to spare, so a secret that crosses the
    cut is masked whole before the final cut."""
    text = result_text(value)
    if len(text) <= limit:
        return mask_text(text)
    total = len(text)
    text = mask_text(text[: limit + MASK_SLACK])
    shown = max(0, limit - len(cut_note(total, limit)))
    return text[:shown] + cut_note(total, shown)


# --- the model's calls: ids, Unicode, arguments -------------------------------------------


def _escape_surrogates(text: str) -> str:
    """Lone surrogates in raw JSON text as `\\udXXX` escapes: the text stays what the model
    sent (JSON-decoding it gives the same string) and becomes encodable."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def unique_calls(message: ChatMessage) -> ChatMessage:
    """The assistant message with every call id unique and non-empty, and no lone
    surrogates (which would fail the next request's encoding). A repeated id gets a
    suffix (the second `call_1` becomes `call_1_2`), a missing one `call_N`; the same
    ToolCall goes into the message and into the loop, so the tool messages answer the ids
    the next request carries. Returns `message` itself when nothing needs changing."""
    calls = message.tool_calls
    ids = [call.id for call in calls]
    clean = all(ids) and len(set(ids)) == len(ids)
    if clean and all(c.id.isascii() and c.name.isascii() and c.arguments.isascii() for c in calls):
        return message
    taken = set(ids)
    seen: set[str] = set()
    fixed: list[ToolCall] = []
    for call in calls:
        call_id = valid_unicode(call.id)
        if not call_id or call_id in seen:
            base, n = (call_id, 2) if call_id else ("call", 1)
            while f"{base}_{n}" in taken or f"{base}_{n}" in seen:
                n += 1
            call_id = f"{base}_{n}"
        seen.add(call_id)
        fixed.append(ToolCall(call_id, valid_unicode(call.name), _escape_surrogates(call.arguments)))
    if all(a.id == b.id and a.name == b.name and a.arguments == b.arguments for a, b in zip(calls, fixed, strict=True)):
        return message
    return dataclasses.replace(message, tool_calls=fixed)


class _Refused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"contain an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(text: str) -> Any:
    raise _Refused(f"contain {text}, which JSON does not allow; send a number")


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_arguments(raw: str, name: str, max_bytes: int) -> tuple[dict[str, Any], str] | str:
    """A call's raw JSON arguments as a dict and their canonical JSON (the key for
    repeated calls), or the error text: too large, not JSON, not an object, NaN or
    Infinity (or a float beyond its range), an integer of more than MAX_INT_DIGITS digits,
    nested deeper than MAX_DEPTH, or lone surrogates (invalid Unicode)."""
    raw = raw or "{}"
    if len(raw) * 4 > max_bytes and (size := len(raw.encode("utf-8", "replace"))) > max_bytes:
        return f"arguments of {name} are {size} bytes, over the limit of {max_bytes} bytes"
    try:
        parsed = json.loads(raw, parse_int=_parse_int, parse_constant=_parse_constant)
    except _Refused as exc:
        return f"arguments of {name} {exc}"
    except json.JSONDecodeError as exc:
        return f"arguments of {name} are not valid JSON ({exc.msg} at position {exc.pos})"
    except RecursionError:  # '[[[[...' within the size limit: the decoder recurses per level
        return f"arguments of {name} are nested too deeply (at most {MAX_DEPTH} levels)"
    except ValueError as exc:
        return f"arguments of {name} are not valid JSON ({exc})"
    if not isinstance(parsed, dict):
        return f"arguments of {name} must be a JSON object, not {type(parsed).__name__}"
    if raw.count("{") + raw.count("[") > MAX_DEPTH and _deeper_than(parsed, MAX_DEPTH):
        return f"arguments of {name} are nested too deeply (at most {MAX_DEPTH} levels)"
    try:
        key = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # 1e999: a float out of range, infinite
        return f"arguments of {name} contain a number out of the range of a float"
    if not (key.isascii() or not _SURROGATE.search(key)):
        return f"arguments of {name} contain invalid Unicode (a lone surrogate such as \\ud800)"
    return parsed, key


# --- where model-called functions run -----------------------------------------------------


class ToolThreads:
    """Daemon worker threads for the sync native functions a model calls, at most `limit`
    of them in the process, so the tool timeout can stop *waiting* for one.

    Python cannot stop a thread: a call that times out is abandoned, its thread runs on
    until the function returns, and then its result is dropped. Threads stuck that way
    hold their slot; while all `limit` are busy, later calls wait in a queue, under their
    own timeout, and a call whose wait timed out never starts. The threads are daemons:
    they do not hold up the interpreter's exit (nor `asyncio.run`'s end)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.threads = 0
        self.busy = 0
        self._jobs: queue.SimpleQueue[tuple[contextvars.Context, Callable[[], Any], asyncio.Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()

    @property
    def saturated(self) -> bool:
        return self.busy >= self.limit

    def run(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `call()` in a worker thread (in a copy of the current context, where sync
        functions it calls itself run inline: a worker never waits for another)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        context = contextvars.copy_context()
        context.run(SYNC_RUNNER.set, None)
        self._jobs.put((context, call, future))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self.threads < self.limit:
                    self.threads += 1
                    threading.Thread(target=self._work, name=f"kernel-tool-{self.threads}", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            context, call, future = self._jobs.get()
            if not future.cancelled():  # its wait timed out before it started: never run it
                with self._lock:
                    self.busy += 1
                try:
                    value, error = context.run(call), None
                except BaseException as exc:  # handed to the awaiting task
                    value, error = None, exc
                finally:
                    with self._lock:
                        self.busy -= 1
                with contextlib.suppress(RuntimeError):  # RuntimeError: the event loop is closed
                    future.get_loop().call_soon_threadsafe(_settle, future, value, error)
                del value, error
            del context, call, future
            self._idle.release()


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled: the call timed out, its result is dropped
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


_threads: ToolThreads | None = None
_threads_lock = threading.Lock()


def _forget_threads() -> None:  # a forked child has none of its parent's threads
    global _threads, _threads_lock
    _threads, _threads_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def tool_threads() -> ToolThreads:
    """The process's ToolThreads (made on first use)."""
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ToolThreads(MAX_TOOL_THREADS)
        return _threads


async def invoke_tool(kernel: Kernel, fn: KernelFunction, arguments: dict[str, Any],
                      policy: ToolLoopSettings) -> FunctionResult:
    """Invoke `fn` for a model's call: through `kernel.invoke` (function filters apply),
    under `policy.tool_timeout`, plain sync native functions (this one and any it calls)
    in worker threads so the timeout can stop waiting for them (with `tool_timeout=None`
    nothing could stop them: they run inline, the fast path). The value comes back as the
    tool result's text: masked, cut to `policy.max_result_chars`."""
    timeout = policy.tool_timeout
    if not timeout:
        value = await kernel.invoke(fn, arguments)
    else:
        threads = tool_threads()
        token = SYNC_RUNNER.set(threads.run)
        try:
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                value = await kernel.invoke(fn, arguments)
        except TimeoutError as exc:
            if isinstance(exc, FunctionTimeoutError) or not threads.saturated:
                raise
            raise FunctionTimeoutError(
                f"{fn.fully_qualified_name} timed out after {timeout} s; all {threads.limit} worker threads for "
                "sync functions are busy (a call that timed out runs on until it returns)"
            ) from None
        finally:
            SYNC_RUNNER.reset(token)
    value.value = safe_result(value.value, policy.max_result_chars)
    return value


# --- policy and selection -----------------------------------------------------------------


def resolve_policy(base: ToolLoopSettings, override: Any) -> ToolLoopSettings:
    if override is None:
        return base
    if isinstance(override, ToolLoopSettings):
        return override
    if not isinstance(override, Mapping):
        raise ConfigurationError(
            f"tool loop policy must be a mapping or ToolLoopSettings, not {type(override).__name__}"
        )
    try:
        return ToolLoopSettings.model_validate({**base.model_dump(), **override})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid tool loop policy: {problems}") from None


def select_functions(kernel: Kernel, tools: Any, plugins: Any) -> list[KernelFunction]:
    """The functions to offer: all (default), those of `plugins`, and/or those named in
    `tools` (names or KernelFunctions). `tools=[]`, `False` or `"none"` offers none."""
    if isinstance(plugins, str):
        plugins = [plugins]
    if plugins is not None:
        for name in plugins:
            if name not in kernel.plugins:
                raise FunctionNotFoundError(
                    f"no plugin named {name!r} (plugins: {', '.join(sorted(kernel.plugins)) or 'none'})"
                )
    if tools is False or tools == "none":
        return []
    if tools is None or tools is True or tools == "all":
        return kernel.functions(None if tools == "all" else plugins)
    if isinstance(tools, str | KernelFunction):
        tools = [tools]
    selected: list[KernelFunction] = kernel.functions(plugins) if plugins is not None else []
    for item in tools:
        fn = item if isinstance(item, KernelFunction) else kernel.get_function(str(item))
        if fn not in selected:
            selected.append(fn)
    return selected
