"""`kernel logs`: the journal's runs listed and filtered, one run shown as a tree, usage
stats; human and `--json` output. The journal is written by a real kernel (the scripted
model of `kernel.testing` answering), then read by the CLI's `main()` in this process, and
once by the console script in a subprocess. (The tests are synchronous: `main()` runs
its own event loop.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kernel import Kernel, KernelSettings, PromptFunction
from kernel.cli import main
from kernel.planning import execute_plan
from kernel.planning.model import Plan
from kernel.testing import ScriptedChatModel, tool_call

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "kernel"
PLAN = {"goal": "add one and two", "steps": [{"id": "s1", "function": "math.add", "arguments": {"a": 1, "b": 2}}],
        "output": "s1"}


async def journal_runs(folder: Path, **settings: Any) -> dict[str, str]:
    """Four runs journaled in `folder/.kernel/journal.db` (the default place): a prompt
    function (service `main`), a chat turn with a tool call (service `cheap`), a failed
    call, a plan. Returns their ids by name."""
    config: dict[str, Any] = {"journal": True, "journal_path": folder / ".kernel" / "journal.db",
                              "default_chat": "main", "prices": {"scripted-1": {"input": 1.0, "output": 2.0}},
                              **settings}
    kernel = Kernel(settings=KernelSettings(**config), load_entry_points=False)
    kernel.services.add_service("main", ScriptedChatModel(["a zebra, in French: un zèbre"], model="scripted-1"))
    cheap = ScriptedChatModel([tool_call("math.add", a=2, b=3, id="call-7"), "It is five."], model="tiny-1")
    kernel.services.add_service("cheap", cheap)
    kernel.add_function(PromptFunction.from_template("Translate {{ word }} to French.", name="translate",
                                                     plugin="lang"))
    await kernel.invoke("lang.translate", word="zebra")
    await kernel.chat("What is 2 + 3?", tools=["math.add"], service="cheap")
    with pytest.raises(Exception, match="divisor"):
        await kernel.invoke("math.divide", a=1, b=0)
    await execute_plan(kernel, Plan.from_dict(PLAN))
    await kernel.aclose()
    from kernel.events import open_reader

    with open_reader(path=folder / ".kernel" / "journal.db") as reader:
        return {run["name"]: run["id"] for run in reader.runs()}


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def names(output: str) -> list[str]:
    return [run["name"] for run in json.loads(output)]


# --- list ----------------------------------------------------------------------------------


def test_logs_lists_recent_runs_with_their_service_tokens_cost_and_status(tmp_path: Path, cli: Any) -> None:
    ids = asyncio.run(journal_runs(tmp_path))
    code, out, err = cli("logs")
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == ["RUN", "STARTED", "KIND", "NAME", "SERVICE", "MODEL", "TOKENS", "COST", "TIME", "STATUS"]
    assert [row.split()[0] for row in rows] == [ids["add one and two"], ids["math.divide"], ids["chat"],
                                               ids["lang.translate"]]  # the latest first
    translate = rows[-1].split()
    assert translate[3:8] == ["function", "lang.translate", "main", "scripted-1", "10+5"]
    assert translate[8] == "$0.00002" and translate[-1] == "ok"  # 10 x $1/M + 5 x $2/M, not shown as $0
    chat = rows[2].split()
    assert chat[3:9] == ["chat", "chat", "cheap", "tiny-1", "20+10", "unpriced"]  # tiny-1 has no price
    assert rows[1].split()[-1] == "error"
    assert cli("logs", "list") == (0, out, "")  # `logs` alone is `logs list`


def test_logs_json_gives_every_field(tmp_path: Path, cli: Any) -> None:
    asyncio.run(journal_runs(tmp_path))
    code, out, _ = cli("logs", "--json")
    assert code == 0
    runs = json.loads(out)
    translate = runs[-1]
    assert {k: translate[k] for k in ("kind", "name", "status", "service", "model", "input_tokens", "output_tokens",
                                      "requests", "priced")} == {
        "kind": "function", "name": "lang.translate", "status": "ok", "service": "main", "model": "scripted-1",
        "input_tokens": 10, "output_tokens": 5, "requests": 1, "priced": 1}
    assert translate["cost"] == pytest.approx(2e-5) and translate["duration"] > 0
    assert runs[1]["error"].startswith("parameter 'b' of math.divide")


def test_logs_filters(tmp_path: Path, cli: Any) -> None:
    asyncio.run(journal_runs(tmp_path))
    assert names(cli("logs", "--function", "lang.translate", "--json")[1]) == ["lang.translate"]
    # a function called anywhere in the run: the chat's tool call and the plan's step
    assert names(cli("logs", "--function", "math.*", "--json")[1]) == ["add one and two", "math.divide", "chat"]
    assert names(cli("logs", "--service", "cheap", "--json")[1]) == ["chat"]
    assert names(cli("logs", "--status", "error", "--json")[1]) == ["math.divide"]
    assert names(cli("logs", "-q", "zèbre", "--json")[1]) == ["lang.translate"]  # in the answer
    assert names(cli("logs", "--query", "five", "--json")[1]) == ["chat"]
    assert names(cli("logs", "-q", "divisor", "--json")[1]) == ["math.divide"]  # in the error
    assert names(cli("logs", "-n", "2", "--json")[1]) == ["add one and two", "math.divide"]
    assert len(names(cli("logs", "--since", "1h", "--json")[1])) == 4
    tomorrow = time.strftime("%Y-%m-%d", time.localtime(time.time() + 86400))
    assert names(cli("logs", "--since", tomorrow, "--json")[1]) == []
    code, out, _ = cli("logs", "--status", "cancelled")
    assert code == 0 and out.strip() == "no run matches"
    assert names(cli("logs", "--function", "lang.*", "--status", "ok", "--since", "2d", "--json")[1]) == [
        "lang.translate"]


def test_a_bad_since_is_a_usage_error(tmp_path: Path, cli: Any) -> None:
    asyncio.run(journal_runs(tmp_path))
    code, out, err = cli("logs", "--since", "yesterday")
    assert code == 2 and out == ""
    assert "bad --since 'yesterday': expected 30m, 2h, 7d, 1w or a date" in err


def test_without_a_journal_logs_says_so(cli: Any, tmp_path: Path) -> None:
    code, out, _ = cli("logs")
    assert code == 0 and out.startswith("no runs journaled yet")
    assert cli("logs", "--json")[:2] == (0, "[]\n")
    code, _, err = cli("logs", "show")
    assert code == 1 and "no journal at" in err
    assert not (tmp_path / ".kernel").exists()  # reading creates nothing


def test_logs_reads_the_journal_the_configuration_names(tmp_path: Path, cli: Any) -> None:
    elsewhere = tmp_path / "elsewhere"
    asyncio.run(journal_runs(elsewhere))
    assert cli("logs", "--json")[1] == "[]\n"
    (tmp_path / "kernel.toml").write_text(f'journal_path = "{elsewhere / ".kernel" / "journal.db"}"\n',
                                          encoding="utf-8")
    assert len(names(cli("logs", "--json")[1])) == 4


# --- show -------------------------------------------------------------------------------------


def test_logs_show_prints_a_chat_run_as_a_tree(tmp_path: Path, cli: Any) -> None:
    ids = asyncio.run(journal_runs(tmp_path))
    code, out, _ = cli("logs", "show", ids["chat"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"run {ids['chat']}  chat chat  ok") and "tokens 20+10" in lines[0]
    assert "[cheap/tiny-1]" in lines[0]
    text = "\n".join(lines)
    assert "└─ chat chat ok" in text
    assert "├─ model tiny-1 (cheap) ok" in text and "10+5 tokens cost unpriced" in text
    assert "├─ tool math.add call-7 ok" in text
    assert "│  └─ function math.add ok" in text  # the tool's invocation, nested under it
    assert "user: What is 2 + 3?" in text
    assert '→ math-add {"a": 2, "b": 3}' in text  # the tool call the model made
    assert "tool: 5.0" in text and "→ answer: It is five." in text
    assert all(line == line.rstrip() for line in lines)


def test_logs_show_defaults_to_the_last_run_and_shows_plan_steps(tmp_path: Path, cli: Any) -> None:
    ids = asyncio.run(journal_runs(tmp_path))
    code, out, _ = cli("logs", "show")
    assert code == 0
    assert out.startswith(f"run {ids['add one and two']}  plan add one and two  ok")
    assert "1 steps" in out and "step s1 math.add ok" in out and '{"a": 1, "b": 2}' in out and "→ 3.0" in out
    assert cli("logs", "show", "last")[1] == out


def test_logs_show_json_is_the_whole_tree(tmp_path: Path, cli: Any) -> None:
    ids = asyncio.run(journal_runs(tmp_path))
    code, out, _ = cli("logs", "show", ids["lang.translate"], "--json")
    assert code == 0
    tree = json.loads(out)
    assert tree["id"] == ids["lang.translate"] and tree["status"] == "ok"
    [function] = tree["events"]
    assert function["data"]["arguments"] == {"word": "zebra"}
    prompt, model = function["children"]
    assert prompt["kind"] == "prompt" and prompt["data"]["messages"][0]["content"] == "Translate zebra to French."
    assert model["kind"] == "model" and model["data"]["text"] == "a zebra, in French: un zèbre"
    assert model["run_id"] == model["parent_id"] == tree["id"]


def test_logs_show_of_an_error_and_of_an_unknown_run(tmp_path: Path, cli: Any) -> None:
    ids = asyncio.run(journal_runs(tmp_path))
    code, out, _ = cli("logs", "show", ids["math.divide"])
    assert code == 0 and "function math.divide error" in out
    assert "error: parameter 'b' of math.divide: division by zero" in out and "error ArgumentError" in out
    code, out, err = cli("logs", "show", "ffffffffffff")
    assert code == 1 and out == "" and err.strip() == "error: no run 'ffffffffffff' in the journal"


def test_logs_show_says_when_content_was_not_journaled(tmp_path: Path, cli: Any) -> None:
    ids = asyncio.run(journal_runs(tmp_path, journal_content=False))
    code, out, _ = cli("logs", "show", ids["lang.translate"])
    assert code == 0 and "(content not journaled)" in out and "zebra" not in out and "zèbre" not in out
    assert "10+5 tokens" in out


# --- stats ------------------------------------------------------------------------------------


def test_logs_stats_per_service_function_and_day(tmp_path: Path, cli: Any) -> None:
    asyncio.run(journal_runs(tmp_path))
    code, out, _ = cli("logs", "stats", "--json")
    assert code == 0
    stats = json.loads(out)
    by_service = {row["key"]: row for row in stats["by_service"]}
    assert {k: (v["calls"], v["input_tokens"], v["output_tokens"]) for k, v in by_service.items()} == {
        "cheap": (2, 20, 10), "main": (1, 10, 5)}
    assert by_service["cheap"]["cost"] is None and by_service["main"]["cost"] == pytest.approx(2e-5)
    assert {row["key"]: row["calls"] for row in stats["by_function"]} == {"chat": 2, "lang.translate": 1}
    [day] = stats["by_day"]
    assert day["calls"] == 3 and day["key"] == time.strftime("%Y-%m-%d", time.gmtime())
    code, out, _ = cli("logs", "stats", "--by", "service")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "model calls by service" and lines[1].split() == ["SERVICE", "CALLS", "INPUT", "OUTPUT",
                                                                         "COST", "TIME"]
    assert lines[2].split()[:5] == ["cheap", "2", "20", "10", "unpriced"]
    assert lines[3].split()[:5] == ["main", "1", "10", "5", "$0.00002"]
    tomorrow = time.strftime("%Y-%m-%d", time.localtime(time.time() + 86400))
    assert json.loads(cli("logs", "stats", "--since", tomorrow, "--by", "day", "--json")[1]) == {"by_day": []}


# --- the console script -----------------------------------------------------------------------


def test_the_console_script_reads_the_journal(tmp_path: Path) -> None:
    ids = asyncio.run(journal_runs(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([str(CONSOLE_SCRIPT), "logs", "--function", "lang.*", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [run["id"] for run in json.loads(done.stdout)] == [ids["lang.translate"]]


def test_a_journal_that_cannot_be_read_is_an_error_not_an_empty_list(cli: Any, tmp_path: Path) -> None:
    (tmp_path / ".kernel").mkdir()
    (tmp_path / ".kernel" / "journal.db").write_text("not a database " * 100, encoding="utf-8")
    for argv in (["logs"], ["logs", "show"], ["logs", "stats", "--json"]):
        code, out, err = cli(*argv)
        assert code == 1 and out == "", argv
        assert err.strip() == "error: cannot open the journal at .kernel/journal.db: file is not a database"


# --- kernel chat --continue -------------------------------------------------------------------------


def chat_session(cli_main: Any, model: ScriptedChatModel, stdin: str, *argv: str,
                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """One `kernel chat` session in this process, its turns read from `stdin`, the
    scripted `model` as the default chat service."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli_main(["chat", *argv], configure=lambda kernel: kernel.services.add_service("scripted", model))
    out, err = capsys.readouterr()
    return code, out, err


def test_chat_continue_goes_on_with_the_last_conversation_from_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    model = ScriptedChatModel([tool_call("math.add", a=2, b=3, id="call-9"), "Five, Ada.", "You are Ada.",
                               "Still Ada."])
    code, out, _ = chat_session(main, model, "I am Ada. What is 2 + 3?\n", "-s", "Be brief.",
                                monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and out.strip() == "Five, Ada."
    code, out, err = chat_session(main, model, "Who am I?\n", "--continue", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and out.strip() == "You are Ada."
    assert "continuing chat run" in err and "(5 messages)" in err
    sent = [(m.role, m.content) for m in model.requests[2].messages]
    assert sent == [("system", "Be brief."), ("user", "I am Ada. What is 2 + 3?"), ("assistant", ""),
                    ("tool", "5.0"), ("assistant", "Five, Ada."), ("user", "Who am I?")]
    assert model.requests[2].messages[2].tool_calls[0].id == "call-9"
    assert model.requests[2].messages[3].tool_call_id == "call-9"
    # again: the continued conversation is now the latest; --system replaces the system message
    code, out, _ = chat_session(main, model, "And now?\n", "-c", "-s", "Be very brief.", monkeypatch=monkeypatch,
                                capsys=capsys)
    assert code == 0 and out.strip() == "Still Ada."
    sent = [(m.role, m.content) for m in model.requests[3].messages]
    assert sent[0] == ("system", "Be very brief.") and sent[-3:] == [
        ("user", "Who am I?"), ("assistant", "You are Ada."), ("user", "And now?")]


def test_chat_continue_a_given_run_and_when_there_is_nothing_to_continue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    model = ScriptedChatModel(["first answer", "second answer", "continued"])
    code, _, err = chat_session(main, model, "hello\n", "--continue", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1
    assert err.strip() == "error: cannot continue: no journal at .kernel/journal.db (nothing journaled yet)"
    assert chat_session(main, model, "one\n", "--no-tools", monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    assert chat_session(main, model, "two\n", "--no-tools", monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    first = chat_ids(journaled_runs(capsys))[-1]  # the earliest chat
    code, _, _ = chat_session(main, model, "three\n", "--no-tools", "--continue", first,
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert [(m.role, m.content) for m in model.requests[-1].messages] == [
        ("user", "one"), ("assistant", "first answer"), ("user", "three")]


def test_chat_continue_needs_the_content_journaled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    monkeypatch.setenv("KERNEL_JOURNAL_CONTENT", "false")
    model = ScriptedChatModel(["first answer", "never"])
    assert chat_session(main, model, "one\n", "--no-tools", monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    code, _, err = chat_session(main, model, "two\n", "--continue", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "was journaled without content" in err and len(model.requests) == 1


def journaled_runs(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["logs", "--json"]) == 0
    return list(json.loads(capsys.readouterr().out))


def chat_ids(runs: list[dict[str, Any]]) -> list[str]:
    return [run["id"] for run in runs if run["kind"] == "chat"]


def test_logs_show_never_sends_escape_sequences_to_the_terminal(tmp_path: Path, cli: Any) -> None:
    async def hostile() -> None:
        kernel = Kernel(settings=KernelSettings(journal=True, journal_path=tmp_path / ".kernel" / "journal.db"),
                        load_entry_points=False)
        kernel.services.add_service("main", ScriptedChatModel(["\x1b]0;owned\x07\x1b[2Jcleared \x9b31m"]))
        kernel.add_function(PromptFunction.from_template("Say {{ x }}", name="say", plugin="lang"))
        await kernel.invoke("lang.say", x="\x1b[31mred")
        await kernel.aclose()

    asyncio.run(hostile())
    code, out, _ = cli("logs", "show")
    assert code == 0 and "cleared" in out and "red" in out
    assert not any(c in out for c in ("\x1b", "\x07", "\x9b")), repr(out)
    code, out, _ = cli("logs", "show", "--json")  # JSON escapes them
    assert code == 0 and "\x1b" not in out and "\\u001b" in out
