"""The everyday paths of the `kernel` command, through the real console script: `-o`
execution settings, Ctrl-C at the chat prompt (a pseudo-terminal), a closed stdout pipe
(`| head`), `render` without model calls, `config check`, paths relative to kernel.toml,
`prompt`, `memory ask`, `services`, and the help of every command.

The chat model is a third-party connector installed for the test (a distribution with an
entry point, as a user installs one): it records every request it gets in a JSONL file and
answers with the reply its service configures, so "no model call" is a file that stays
empty. Embeddings come from a deterministic hashing connector in the same distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kernel.cli import build_parser
from kernel.cli.app import BUILTIN_COMMANDS
from kernel.cli.common import HelpFormatter
from kernel.settings import KernelSettings

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"
DOCS = ROOT / "samples" / "data" / "docs"
REPLY = "A scripted answer."
PLAN = {"goal": "add two numbers", "steps": [{"id": "s1", "function": "math.add", "arguments": {"a": 2, "b": 3}}],
        "output": "s1"}

FAKES = '''
"""A recording chat model and a hashing embedder, as a third-party connector package."""
import hashlib
import json
import math

from kernel.hookspecs import hookimpl
from kernel.testing import ScriptedChatModel


class Recording(ScriptedChatModel):
    def __init__(self, log, reply):
        super().__init__(default=reply, model="recording")
        self.log = log

    def _next(self, request):
        with open(self.log, "a", encoding="utf-8") as out:
            out.write(json.dumps({"messages": [[m.role, m.content] for m in request.messages],
                                  "settings": request.settings}) + "\\n")
        return super()._next(request)


class Hashing:
    provider = "hashing"
    model = "hashing-64"
    dimension = 64

    async def embed(self, texts):
        out = []
        for text in texts:
            vector = [0.0] * 64
            for word in text.lower().split():
                vector[int(hashlib.sha1(word.encode()).hexdigest(), 16) % 64] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            out.append([v / norm for v in vector])
        return out


@hookimpl
def register_connectors(register):
    register("chat", "recording", lambda name, svc, settings: Recording(svc.options["log"], svc.options["reply"]))
    register("embedding", "hashing", lambda name, svc, settings: Hashing())
'''

DIGEST = """---
description: A digest of a text.
inputs:
  text: The text.
---
Digest of {{ text }}: {{ writer.summarize(text) }} ({{ math.add(a=1, b=2) }})
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site-packages")
    (site / "cli_fakes.py").write_text(FAKES, encoding="utf-8")
    info = site / "cli_fakes-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cli-fakes\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[orchestration_kernel]\nfakes = cli_fakes\n", encoding="utf-8")
    return site


class Project:
    """A project folder with a kernel.toml; `run` runs the console script in it."""

    def __init__(self, root: Path, site: Path) -> None:
        self.root = root
        self.log = root / "requests.jsonl"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
        self.env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
        (root / "plugins" / "digest").mkdir(parents=True)
        (root / "plugins" / "digest" / "digest.prompt").write_text(DIGEST, encoding="utf-8")
        self.write_config("")

    def write_config(self, extra: str) -> None:
        (self.root / "kernel.toml").write_text(f'''
default_chat = "rec"
default_embedding = "hash"
default_memory = "store"
plugin_allowlist = "cli-fakes"
plugin_dirs = ["plugins"]
cache_dir = "cache"
{extra}
[services.rec]
provider = "recording"
options = {{ log = "{self.log}", reply = "{REPLY}" }}

[services.planner]
provider = "recording"
options = {{ log = "{self.log}", reply = {json.dumps(json.dumps(PLAN))} }}

[services.hash]
provider = "hashing"
kind = "embedding"

[services.store]
provider = "sqlite"
options = {{ path = "data/memory.db" }}
''', encoding="utf-8")

    def run(self, *argv: str, stdin: str | None = "", cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CONSOLE_SCRIPT), *argv], cwd=cwd or self.root, env={**self.env, **(env or {})},
                              input=stdin, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL if stdin is None else None)

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def project(tmp_path: Path, site: Path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    return Project(root, site)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    return done


# --- -o NAME=VALUE -------------------------------------------------------------------------


def test_option_sets_the_execution_settings_of_run_chat_plan_and_prompt(project: Project) -> None:
    ok(project.run("run", "writer.summarize", "-a", "text=hello", "-o", "max_tokens=7", "-o", "temperature=0.5",
                   "--option", 'stop=["END"]', "-o", "mode=fast"))
    [request] = project.requests()
    assert request["settings"] == {"max_tokens": 7, "temperature": 0.5, "stop": ["END"], "mode": "fast"}
    project.log.unlink()
    ok(project.run("chat", "--no-tools", "-o", "max_tokens=9", stdin="hi\n"))
    assert project.requests()[0]["settings"]["max_tokens"] == 9
    project.log.unlink()
    ok(project.run("prompt", "hi", "-o", "temperature=0"))
    assert project.requests()[0]["settings"] == {"temperature": 0}
    project.log.unlink()
    done = ok(project.run("plan", "add 2 and 3", "--service", "planner", "-o", "max_tokens=900", "--json"))
    assert json.loads(done.stdout)["steps"][0]["function"] == "math.add"
    assert project.requests()[0]["settings"]["max_tokens"] == 900


def test_bad_options_are_usage_errors(project: Project) -> None:
    done = project.run("run", "writer.summarize", "-a", "text=x", "-o", "max_tokens")
    assert done.returncode == 2 and "bad -o/--option 'max_tokens'" in done.stderr
    done = project.run("run", "math.add", "-a", "a:=1", "-a", "b:=2", "-o", "max_tokens=5")
    assert done.returncode == 2 and "native function" in done.stderr
    done = project.run("plan", "--from", "plan.json", "-o", "max_tokens=5")
    assert done.returncode == 2 and "--from FILE asks no model" in done.stderr
    assert project.requests() == []


# --- Ctrl-C and closed pipes ----------------------------------------------------------------


def _read_until(fd: int, wanted: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_ctrl_c_at_the_chat_prompt_ends_the_session_at_once(project: Project) -> None:
    """On a real terminal: the prompt waits for a line; Ctrl-C (the terminal's ^C, which
    sends SIGINT to the foreground process) ends it within a second, exit 130."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: `kernel chat` on the pseudo-terminal
        try:
            os.chdir(project.root)
            os.execve(str(CONSOLE_SCRIPT), [str(CONSOLE_SCRIPT), "chat", "--no-tools"], project.env)
        finally:
            os._exit(127)
    status = None
    try:
        seen = _read_until(fd, b"> ", 60)
        assert b"> " in seen, seen
        started = time.monotonic()
        os.write(fd, b"\x03")
        seen += _read_until(fd, b"error: interrupted", 5)
        while status is None and time.monotonic() - started < 5:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
            else:
                time.sleep(0.02)
        assert status == 130, f"kernel chat still waiting {time.monotonic() - started:.1f} s after Ctrl-C: {seen!r}"
        assert time.monotonic() - started < 3
        assert b"error: interrupted" in seen and b"Traceback" not in seen
    finally:
        if status is None:  # still waiting for Enter: end it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert project.requests() == []  # no model call was made


def test_a_closed_stdout_pipe_ends_quietly_with_141(project: Project, tmp_path: Path) -> None:
    """`kernel plugins list | head -2` with an output far larger than the pipe's buffer:
    `head` exits after two lines; the kernel stops without a word, exit 141 (128 + SIGPIPE)."""
    bulk = tmp_path / "big" / "bulk"
    bulk.mkdir(parents=True)
    for index in range(150):
        (bulk / f"f{index:03d}.prompt").write_text(
            "---\ndescription: " + "word " * 300 + "\ninputs:\n  x: the x\n---\nHello {{ x }}\n", encoding="utf-8")
    script = (f'set -o pipefail; "{CONSOLE_SCRIPT}" plugins list "{bulk.parent}" | head -2; '
              'echo "kernel=${PIPESTATUS[0]}" >&2')
    done = subprocess.run(["bash", "-c", script], cwd=project.root, env=project.env, capture_output=True, text=True,
                          timeout=120)
    assert len(done.stdout.splitlines()) == 2 and done.stdout.startswith("bulk.f000  (prompt)")
    assert done.stderr.strip() == "kernel=141", done.stderr


# --- render makes no model call ---------------------------------------------------------------


def test_render_calls_no_model_unless_execute(project: Project) -> None:
    done = ok(project.run("render", "digest.digest", "-a", "text=hello"))
    assert done.stdout == '[user]\nDigest of hello: [writer.summarize(text="hello")] (3.0)\n'
    assert project.requests() == []  # the nested prompt function was not run; math.add (native) was
    long = "x" * 100
    done = ok(project.run("render", "digest.digest", "-a", f"text={long}", "--json"))
    assert f'[writer.summarize(text="{"x" * 36}...)]' in json.loads(done.stdout)[0]["content"]
    assert project.requests() == []
    done = ok(project.run("render", "digest.digest", "-a", "text=hello", "--execute"))
    assert done.stdout == f"[user]\nDigest of hello: {REPLY} (3.0)\n"
    [request] = project.requests()
    assert request["messages"][-1][1].endswith("Text:\nhello")


# --- config check ---------------------------------------------------------------------------------


def test_config_check_reports_every_problem_before_a_model_call(project: Project) -> None:
    done = ok(project.run("config", "check"))
    assert "ok: no problems found" in done.stdout and "rec  (chat service, provider recording)" in done.stdout
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    project.write_config(f'''
[services.typo]
provider = "opneai"
model = "gpt-4o-mini"

[services.claude]
provider = "anthropic"
model = "claude-x"
api_key_env = "CLI_TEST_MISSING_KEY"
fallbacks = ["rec", "nowhere"]

[services.server]
provider = "openai"
model = "m"
base_url = "http://127.0.0.1:{port}/v1"
''')
    done = project.run("config", "check", "--service", "recc")
    assert done.returncode == 3, done.stderr
    out = done.stdout
    assert "service 'typo': unknown provider 'opneai' (did you mean 'openai'?)" in out
    assert "default_chat = 'recc' names no configured service (did you mean 'rec'?)" in out
    assert "service 'claude': fallback 'nowhere' is not a configured service" in out
    assert "CLI_TEST_MISSING_KEY" in out
    assert "unreachable" not in out  # the base URL is probed only with --probe
    assert done.stderr.strip() == "error: 4 configuration problem(s)"
    done = project.run("config", "check", "--probe", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 3 and report["ok"] is False
    messages = [p["message"] for p in report["problems"] if p["service"] == "server"]
    assert len(messages) == 1 and f"base_url 'http://127.0.0.1:{port}/v1' is unreachable" in messages[0]
    assert project.requests() == []  # no model was called


# --- paths relative to kernel.toml ------------------------------------------------------------------


def test_paths_in_kernel_toml_are_relative_to_the_file(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = str(project.root / "kernel.toml")
    done = ok(project.run("plugins", "list", "--config", config, cwd=elsewhere))
    assert "digest.digest  (prompt)" in done.stdout  # plugin_dirs = ["plugins"], next to the file
    ok(project.run("memory", "ingest", str(DOCS), "-c", "docs", "--config", config, cwd=elsewhere))
    assert (project.root / "data" / "memory.db").is_file()  # options.path = "data/memory.db"
    assert not (elsewhere / "data").exists()


def test_settings_resolve_file_paths_against_the_file_and_leave_the_environment_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "k.toml").write_text('plugin_dirs = ["plugins", "/abs/p"]\ncache_dir = "~/c"\n'
                                   '[services.s]\nprovider = "sqlite"\noptions = { path = "m.db", timeout = 3 }\n'
                                   '[services.mem]\nprovider = "sqlite"\noptions = { path = ":memory:" }\n',
                                   encoding="utf-8")
    settings = KernelSettings.load(folder / "k.toml")
    assert settings.plugin_dirs == [folder / "plugins", Path("/abs/p")]
    assert settings.cache_dir == Path("~/c").expanduser()
    assert settings.services["s"].options == {"path": str(folder / "m.db"), "timeout": 3}
    assert settings.services["mem"].options == {"path": ":memory:"}
    monkeypatch.setenv("KERNEL_PLUGIN_DIRS", '["rel"]')
    assert KernelSettings.load(folder / "k.toml").plugin_dirs == [Path("rel")]  # the environment: the cwd's


# --- prompt -----------------------------------------------------------------------------------------


def test_prompt_sends_text_and_stdin_and_streams_the_answer(project: Project) -> None:
    done = ok(project.run("prompt", "Say {{ hi }}", "-s", "Be brief."))
    assert done.stdout == REPLY + "\n"
    assert project.requests()[-1]["messages"] == [["system", "Be brief."], ["user", "Say {{ hi }}"]]
    ok(project.run("prompt", "Summarize this.", stdin="line one\nline two\n"))
    assert project.requests()[-1]["messages"] == [["user", "line one\nline two\nSummarize this."]]
    ok(project.run("prompt", "-", stdin="only stdin\n"))
    assert project.requests()[-1]["messages"] == [["user", "only stdin\n"]]
    ok(project.run("prompt", stdin="no text at all"))
    assert project.requests()[-1]["messages"] == [["user", "no text at all"]]
    done = ok(project.run("prompt", "hi", "--json"))
    assert json.loads(done.stdout) == {"service": "rec", "text": REPLY,
                                       "usage": {"input_tokens": 10, "output_tokens": 5, "requests": 1}}
    done = project.run("prompt", stdin="  \n")
    assert done.returncode == 2 and done.stderr.startswith("error: empty prompt")


# --- memory ask, and unknown collections ----------------------------------------------------------


def test_memory_ask_answers_with_numbered_sources(project: Project) -> None:
    ok(project.run("memory", "ingest", str(DOCS), "-c", "docs", "--chunk-size", "400"))
    done = ok(project.run("memory", "ask", "How do I make tomato soup?", "-c", "docs", "-k", "2",
                          "-o", "max_tokens=50"))
    answer, sources = done.stdout.split("\nSources:\n")
    assert answer == REPLY + "\n"
    assert [line.split("]")[0] for line in sources.splitlines()] == ["  [1", "  [2"]
    [request] = project.requests()
    system, user = request["messages"]
    assert system[0] == "system" and "[1] (source: " in system[1] and "[2] (source: " in system[1]
    assert user == ["user", "How do I make tomato soup?"] and request["settings"] == {"max_tokens": 50}
    data = json.loads(ok(project.run("memory", "ask", "tomato soup", "-c", "docs", "-k", "1", "--json")).stdout)
    assert data["answer"] == REPLY and data["sources"][0]["number"] == 1 and data["sources"][0]["reference"]


@pytest.mark.parametrize("action", ["search", "ask"])
def test_an_unknown_collection_is_a_usage_error_listing_the_names(project: Project, action: str) -> None:
    ok(project.run("memory", "ingest", str(DOCS), "-c", "docs", "--chunk-size", "400"))
    done = project.run("memory", action, "soup", "-c", "dcos")
    assert done.returncode == 2
    assert done.stderr == "error: no collection 'dcos' in the store; existing collections: 'docs'\n"
    assert project.requests() == []


# --- services -----------------------------------------------------------------------------------------


def test_services_lists_providers_models_keys_and_defaults(project: Project) -> None:
    secret = "sk-cli-test-0123456789SECRET"
    project.write_config('''
[services.claude]
provider = "anthropic"
model = "claude-x"
api_key_env = "CLI_TEST_KEY"

[services.gpt]
provider = "openai"
model = "gpt-4o-mini"
api_key_env = "CLI_TEST_UNSET_KEY"
''')
    done = ok(project.run("services", env={"CLI_TEST_KEY": secret}))
    assert secret not in done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert lines["NAME"].split() == ["NAME", "KIND", "PROVIDER", "MODEL", "KEY", "DEFAULT"]
    assert lines["claude"].split()[:6] == ["claude", "chat", "anthropic", "claude-x", "set", "($CLI_TEST_KEY)"]
    assert "not set ($CLI_TEST_UNSET_KEY)" in lines["gpt"]
    assert lines["rec"].rstrip().endswith("default chat") and lines["hash"].rstrip().endswith("default embedding")
    rows = {row["name"]: row for row in json.loads(ok(project.run("services", "--json")).stdout)}
    assert rows["store"]["default_for"] == ["memory"] and rows["store"]["provider"] == "sqlite"
    assert rows["claude"]["key"] == "not set" and rows["rec"]["key"] == "not needed"
    assert set(rows) == {"claude", "gpt", "rec", "planner", "hash", "store"}


# --- help --------------------------------------------------------------------------------------------


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        found.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")

    walk(build_parser(["plugins"]), "kernel")
    return found


def test_every_option_has_help_that_shows_its_default_and_every_command_its_exit_codes() -> None:
    for path, parser in _parsers():
        assert parser.epilog and "exit codes:" in parser.epilog and "130" in parser.epilog, path
        formatter = HelpFormatter(path)
        for action in parser._actions:
            skipped = isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
            if skipped or "--version" in action.option_strings:
                continue
            if action.option_strings:
                assert action.help, f"{path}: {action.option_strings} has no help"
            if action.option_strings or action.nargs in ("?", "*"):
                shown = formatter._get_help_string(action) or ""
                assert "default" in shown.lower(), f"{path} {action.option_strings}: no default in {shown!r}"


def test_memory_help_looks_like_the_other_groups(project: Project) -> None:
    memory = ok(project.run("memory", "--help")).stdout
    plugins = ok(project.run("plugins", "--help")).stdout
    for text in (memory, plugins):
        assert "ACTION ...\n" in text and "\nexit codes:\n" in text and "\ncommon options:\n" in text
    assert "Vector memory: ingest, search, ask, collections." in memory
    done = project.run("memory")
    assert done.returncode == 2 and "ACTION" in done.stderr and "required" not in done.stderr


def test_every_builtin_command_and_option_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cli = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    for path, parser in _parsers():
        words = path.split()[1:]
        if not words or words[0] not in {name for names in BUILTIN_COMMANDS.values() for name in names}:
            continue
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert f"`{path}" in cli, f"`{path}` is not documented"
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in cli, f"option {option} of `{path}` is not documented"
