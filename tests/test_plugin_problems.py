"""Plugin folders load function by function: a broken function is reported and left out,
its neighbours load (unless `strict_plugins`); what Semantic Kernel loads while ignoring
it is a warning; what templates call, the variables of declared inputs and execution
settings are checked once a folder is loaded, each problem at file:line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kernel import Kernel, KernelSettings, PluginLoadError
from kernel.cli import main
from kernel.errors import Problem
from kernel.plugin_folders import check_plugins, load_plugins
from kernel.testing import ScriptedChatModel


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kernel.toml, .env or KERNEL_* variables leak in from the machine."""
    for name in list(os.environ):
        if name.startswith("KERNEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KERNEL_PLUGIN_AUTOLOAD", "false")
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def sk_function(root: Path, name: str, template: str, config: dict[str, object] | str | None = None) -> Path:
    folder = root / name
    write(folder / "skprompt.txt", template)
    if config is not None:
        write(folder / "config.json", config if isinstance(config, str) else json.dumps(config, indent=2))
    return folder


def good_and_bad(tmp_path: Path) -> tuple[Path, Path]:
    """(plugin folder `Writer`, the broken function's config.json): `Good` is a valid SK
    function, `Bad` has invalid JSON on line 3."""
    root = tmp_path / "Writer"
    sk_function(root, "Good", "Hello {{$name}}", {"description": "Greet.", "input_variables": [{"name": "name"}]})
    bad = sk_function(root, "Bad", "x", '{\n  "description": "broken",\n  "execution_settings": {,}\n}')
    return root, bad / "config.json"


def kernel_without_standard_plugins(**settings: object) -> Kernel:
    return Kernel(settings=KernelSettings.load(None, standard_plugins=False, **settings), load_entry_points=False)


def standard_kernel() -> Kernel:
    return Kernel(settings=KernelSettings.load(None), load_entry_points=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- function by function ----------------------------------------------------------------


async def test_a_broken_function_does_not_take_its_neighbour_down(tmp_path: Path) -> None:
    root, bad_config = good_and_bad(tmp_path)
    kernel = kernel_without_standard_plugins()
    kernel.add_plugin(root)
    assert set(kernel.plugins["Writer"].functions) == {"Good"}
    assert kernel.plugin_problems == [
        Problem(str(bad_config), "invalid JSON: Expecting property name enclosed in double quotes", 3)]
    messages = await kernel.render("Writer.Good", name="Ada")
    assert messages[0].content == "Hello Ada"


def test_strict_keeps_all_or_nothing(tmp_path: Path) -> None:
    root, bad_config = good_and_bad(tmp_path)
    for kernel in (Kernel(settings=KernelSettings.load(None, standard_plugins=False), load_entry_points=False,
                          strict=True),
                   kernel_without_standard_plugins(strict_plugins=True)):
        with pytest.raises(PluginLoadError) as info:
            kernel.add_plugin(root)
        assert [p.path for p in info.value.problems] == [str(bad_config)]
        assert "Writer" not in kernel.plugins and kernel.plugin_problems == []
    with pytest.raises(PluginLoadError):  # the function for callers that want strictness
        load_plugins(root)


def test_a_folder_where_nothing_loads_still_raises(tmp_path: Path) -> None:
    root = tmp_path / "P"
    sk_function(root, "Bad", "x", "{")
    write(root / "worse.prompt", "{{ oops(")
    kernel = kernel_without_standard_plugins()
    with pytest.raises(PluginLoadError) as info:
        kernel.add_plugin(root)
    assert len(info.value.problems) == 2 and "P" not in kernel.plugins


def test_plugin_dirs_honour_lenient_loading(tmp_path: Path) -> None:
    root, bad_config = good_and_bad(tmp_path)
    nothing = tmp_path / "Nothing"
    sk_function(nothing, "Broken", "x", "{")
    kernel = kernel_without_standard_plugins(plugin_dirs=[root, nothing])  # strict_plugins = false: the default
    assert set(kernel.plugins["Writer"].functions) == {"Good"}
    assert {p.path for p in kernel.plugin_problems} == {str(bad_config), str(nothing / "Broken" / "config.json")}
    with pytest.raises(PluginLoadError):
        kernel_without_standard_plugins(plugin_dirs=[root], strict_plugins=True)


def test_problems_of_the_same_file_stay_with_their_function(tmp_path: Path) -> None:
    root = tmp_path / "P"
    write(root / "typo.prompt", "---\ndescrption: typo\n---\nbody\n")  # built, then left out: it has an error
    write(root / "fine.prompt", "fine {{ x }}")
    write(root / "fine.py", "from kernel import kernel_function\n\n@kernel_function\ndef fine(x: str) -> str:\n"
                            "    return x\n\n@kernel_function\ndef other(x: str) -> str:\n    return x\n")
    found = check_plugins(root, import_modules=True)
    statuses = {check.name: (check.status, [p.message[:32] for p in check.problems]) for check in found.functions}
    assert statuses == {
        "P.fine": ("fails", ["duplicate function name 'P.fine'"]),  # the module's `fine`: the file loaded first wins
        "P.other": ("loads", []),
        "P.typo": ("fails", ["unknown front matter key 'descrp"]),
    }
    assert sorted(found.plugins[0].functions) == ["fine", "other"]
    assert found.plugins[0].functions["fine"].source == str(root / "fine.prompt")


# --- warnings: what Semantic Kernel loads while ignoring it ---------------------------------


def test_free_form_sk_input_types_load_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "P"
    folder = sk_function(root, "Count", "Count {{$n}}",
                         {"input_variables": [{"name": "n", "type": "int", "description": "how many"}]})
    kernel = kernel_without_standard_plugins()
    kernel.add_plugin(root)
    assert "Count" in kernel.plugins["P"].functions
    (problem,) = kernel.plugin_problems
    assert (problem.path, problem.line, problem.severity) == (str(folder / "config.json"), 4, "warning")
    assert "type 'int' is not a JSON schema type" in problem.message
    assert str(problem).startswith(f"{folder / 'config.json'}:4: warning: input 'n'")
    assert load_plugins(root)[0].functions["Count"].name == "Count"  # warnings do not fail strict loading
    (check,) = check_plugins(root).functions
    assert (check.name, check.status) == ("P.Count", "loads with warnings")


def test_keys_sk_ignores_load_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "P"
    folder = sk_function(root, "Ask", "Ask {{$question}}", {
        "schema": 1, "description": "d", "future_key": True,
        "input_variables": [{"name": "question", "description": "q", "required": True}]})
    kernel = kernel_without_standard_plugins()
    kernel.add_plugin(root)
    assert "Ask" in kernel.plugins["P"].functions
    assert {p.severity for p in kernel.plugin_problems} == {"warning"}
    messages = " ".join(p.message for p in kernel.plugin_problems)
    assert "future_key" in messages and "required" in messages
    assert all(p.path == str(folder / "config.json") and p.line is not None for p in kernel.plugin_problems)


def test_our_prompt_format_stays_strict(tmp_path: Path) -> None:
    root = tmp_path / "P"
    path = write(root / "typo.prompt", "---\ninputs:\n  n: {type: int}\n---\n{{ n }}\n")
    (check,) = check_plugins(root).functions
    assert check.status == "fails" and check.problems[0].severity == "error"
    assert check.problems[0].path == str(path) and "unknown type 'int'" in check.problems[0].message


# --- what templates call ---------------------------------------------------------------------


def test_a_call_to_a_missing_function_is_reported_at_load_with_did_you_mean(tmp_path: Path) -> None:
    root = tmp_path / "Fun"
    sk_function(root, "Joke", "Tell a joke about {{$topic}}.")
    caller = sk_function(root, "Show", "Intro\n{{Fun.joke $topic}}\n")  # SK syntax, wrong case
    clock = write(root / "clock.prompt", "---\ndescription: d\n---\nIt is\n{{ time.Now() }} {{ name.upper() }}\n")
    kernel = standard_kernel()
    kernel.add_plugin(root)
    assert set(kernel.plugins["Fun"].functions) == {"Joke"}  # the two callers are left out
    problems = {p.path: p for p in kernel.plugin_problems}
    show = problems[str(caller / "skprompt.txt")]
    assert (show.line, show.severity) == (2, "error")
    assert show.message == ("calls Fun.joke, which does not exist: plugin 'Fun' has no function 'joke' "
                            "(did you mean 'Fun.Joke'?)")
    now = problems[str(clock)]
    assert now.line == 5  # the template's line 2, after 3 lines of front matter
    assert "calls time.Now" in now.message and "(did you mean 'time.now'?)" in now.message
    assert "upper" not in " ".join(p.message for p in kernel.plugin_problems)  # `name` may be a variable


def test_unknown_plugins_are_reported_only_when_every_plugin_is_known(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "P"
    path = write(root / "ask.prompt", "a\nb\n{{ tme.now() }} {{ items.items() }} {{ later.fn() }}\n")
    kernel = standard_kernel()
    kernel.add_plugin(root)  # a kernel may register `tme` later: nothing to say yet
    assert "ask" in kernel.plugins["P"].functions and kernel.plugin_problems == []
    code, out, err = run(capsys, "plugins", "check", str(root))
    assert code == 0, out + err  # warnings alone
    lines = out.splitlines()
    assert lines[0] == "P.ask: loads with warnings"
    assert lines[1] == (f"  {path}:3: warning: calls tme.now: no plugin 'tme' in this folder or the standard plugins "
                        "(did you mean 'time.now'?)")
    assert lines[2].startswith(f"  {path}:3: warning: calls later.fn: no plugin 'later'")
    assert lines[3:] == ["ok: 1 functions in 1 plugins (0 load, 1 load with warnings; 2 warning(s))"]


def test_plugins_check_knows_the_standard_plugins_and_the_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "P"
    write(root / "ok.prompt", "{{ time.now() }} {{ P.helper() }} {{ math.add(1, 2) }}")
    write(root / "helper.prompt", "help")
    bad = write(root / "bad.prompt", "line\n{{ math.ad(1, 2) }}")
    code, out, _ = run(capsys, "plugins", "check", str(root), "--json")
    report = json.loads(out)
    assert code == 4 and report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert {name: c["status"] for name, c in checks.items()} == {
        "P.bad": "fails", "P.helper": "loads", "P.ok": "loads"}
    (problem,) = checks["P.bad"]["problems"]
    assert problem == {"path": str(bad), "line": 2, "severity": "error",
                       "message": "calls math.ad, which does not exist: plugin 'math' has no function 'ad' "
                                  "(did you mean 'math.add'?)"}
    assert report["names"] == ["P.helper", "P.ok"]


# --- declared inputs --------------------------------------------------------------------------


def test_an_undeclared_variable_is_an_error_when_inputs_are_declared(tmp_path: Path) -> None:
    root = tmp_path / "P"
    typo = write(root / "greet.prompt", "---\ninputs:\n  name: who to greet\n---\nHello\n{{ nmae }}!\n")
    write(root / "free.prompt", "---\ndescription: no inputs declared\n---\nHello {{ anything }}\n")
    write(root / "loop.prompt", "---\ninputs: [items]\n---\n{% for item in items %}{{ item }}{% set x = 1 %}"
                                "{{ x }}{% endfor %}")
    found = check_plugins(root)
    statuses = {check.name: check.status for check in found.functions}
    assert statuses == {"P.free": "loads", "P.greet": "fails", "P.loop": "loads"}
    (problem,) = found.problems
    assert (problem.path, problem.line) == (str(typo), 6)
    assert problem.message.startswith("variable 'nmae' is not declared in inputs (did you mean 'name'?)")


# --- execution settings -----------------------------------------------------------------------


def test_unknown_setting_keys_are_warnings_for_the_configured_providers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "P"
    path = write(root / "ask.prompt", "---\nsettings:\n  max_tokens: 10\n  temprature: 0.2\n"
                                      "  reasoning_effort: low\n  function_choice: auto\n---\nAsk\n")
    folder = sk_function(root, "Sk", "x", '{\n  "execution_settings": {\n    "default": {\n'
                                          '      "max_tokens": 5,\n      "chat_system_prompt": "hi",\n'
                                          '      "service_id": "gpt"\n    },\n    "elsewhere": {"anything": 1}\n'
                                          '  }\n}')
    code, out, _ = run(capsys, "plugins", "check", str(root), "--json")  # the default: the local model
    assert code == 0
    found = [(p["path"], p["line"], p["message"].split(":")[0]) for p in json.loads(out)["problems"]]
    assert found == [  # `service_id` is SK's own (dropped); `elsewhere` is no service here (never used)
        (str(folder / "config.json"), 5, "execution setting 'chat_system_prompt' is taken by no configured chat "
                                         "service ('local' (provider local))"),
        (str(path), 4, "execution setting 'temprature' is taken by no configured chat service ('local' (provider "
                       "local))"),
        (str(path), 5, "execution setting 'reasoning_effort' is taken by no configured chat service ('local' "
                       "(provider local))"),
    ]
    assert "did you mean 'temperature'?" in json.loads(out)["problems"][1]["message"]
    # with an OpenAI service configured (no key needed to check, no SDK imported), reasoning_effort is taken
    write(tmp_path / "kernel.toml", '[services.gpt]\nprovider = "openai"\nmodel = "gpt-4o-mini"\n')
    code, out, _ = run(capsys, "plugins", "check", str(root), "--json")
    assert code == 0
    assert [p["message"].split("'")[1] for p in json.loads(out)["problems"]] == ["chat_system_prompt", "temprature"]


def test_tool_setting_keys_follow_the_execution_module() -> None:
    from kernel.plugin_folders.references import TOOL_SETTING_KEYS
    from kernel.prompts import execution

    assert frozenset(execution.TOOL_SETTING_KEYS) == TOOL_SETTING_KEYS


# --- the CLI ----------------------------------------------------------------------------------


def test_render_a_good_function_beside_a_broken_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root, bad_config = good_and_bad(tmp_path)
    code, out, err = run(capsys, "render", "--plugins", str(root), "Writer.Good", "--arg", "name=Ada")
    assert code == 0, err
    assert "Hello Ada" in out
    assert "warning" in err and f"{bad_config}:3: invalid JSON" in err  # the sibling's problem, reported
    monkeypatch.setenv("KERNEL_STRICT_PLUGINS", "true")
    code, out, err = run(capsys, "render", "--plugins", str(root), "Writer.Good", "--arg", "name=Ada")
    assert code == 4 and err.startswith("error: 1 problem(s) loading plugins")


def test_plugins_check_lists_every_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, bad_config = good_and_bad(tmp_path)
    counted = sk_function(root, "Count", "{{$n}}", {"input_variables": [{"name": "n", "type": "int"}]})
    code, out, err = run(capsys, "plugins", "check", str(root))
    assert code == 4
    assert out.splitlines() == [
        "Writer.Bad: fails",
        f"  {bad_config}:3: invalid JSON: Expecting property name enclosed in double quotes",
        "Writer.Count: loads with warnings",
        f"  {counted / 'config.json'}:4: warning: input 'n': type 'int' is not a JSON schema type (array, boolean, "
        "integer, number, object, string); not checked, as in Semantic Kernel",
        "Writer.Good: loads",
        "3 functions in 1 plugins: 1 load, 1 load with warnings, 1 fail",
    ]
    assert err.splitlines()[-1] == f"error: 1 problem(s) and 1 warning(s) in {root}"
    code, out, _ = run(capsys, "plugins", "check", str(root), "--json")
    report = json.loads(out)
    assert code == 4 and report["ok"] is False and report["names"] == ["Writer.Count", "Writer.Good"]
    assert [(c["name"], c["status"]) for c in report["checks"]] == [
        ("Writer.Bad", "fails"), ("Writer.Count", "loads with warnings"), ("Writer.Good", "loads")]
    assert [p["severity"] for p in report["problems"]] == ["error", "warning"]


async def test_a_model_call_still_works_after_a_lenient_load(tmp_path: Path) -> None:
    root, _ = good_and_bad(tmp_path)
    model = ScriptedChatModel(["hi"])
    kernel = kernel_without_standard_plugins()
    kernel.services.add_service("test", model)
    kernel.add_plugin(root)
    assert (await kernel.invoke("Writer.Good", name="Ada")).value == "hi"
