"""The web console in a real browser: Debian's `chromium` driven by Playwright (its own
browser download is never used), against `kernel serve` in its own process with the
`rules` test model. The page loads with no error and asks nothing of another host; a
function runs through the form generated from its schema (result, usage); a chat streams
with the kernel's tool call shown; a plan is drawn as a graph before it runs, runs with
live step status, and asks for the approval of its gated step, which is given with a click.
Screenshots of each panel go to the test's output folder (printed, and recorded as the
`screenshots` property of the test).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve_support import CHROMIUM, CHROMIUM_ARGS, Served, serving, write_project

pytestmark = pytest.mark.slow

GATED_PLAN = {"goal": "publish the sum", "steps": [
    {"id": "s1", "function": "math.add", "arguments": {"a": 2, "b": 3}},
    {"id": "s2", "function": "text.upper", "arguments": {"text": "ready"}},
    {"id": "s3", "function": "ops.publish", "arguments": {"text": {"$step": "s1"}}}], "output": "s3"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = write_project(tmp_path_factory.mktemp("console-project"), delay=0.05)
    with serving(root) as served:
        yield served


@pytest.fixture
async def page(server: Served) -> AsyncIterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):  # fail, do not skip: CI installs it (Makefile)
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium-profile-"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860})
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: problems.append(f"request to another host: {r.url}")
                    if not r.url.startswith(server.url) else None)
            page.problems = problems
            yield page
        finally:
            await context.close()


@pytest.fixture
def shoot(tmp_path: Path, record_property: Callable[[str, object], None]) -> Iterator[Any]:
    taken: list[str] = []

    async def take(page: Any, name: str) -> None:
        path = tmp_path / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        taken.append(str(path))
        print(f"\nscreenshot: {path}")

    yield take
    record_property("screenshots", taken)


async def test_the_console_runs_a_function_chats_and_runs_a_plan_with_an_approval(
        server: Served, page: Any, shoot: Any) -> None:
    from playwright.async_api import expect

    await page.goto(server.url + "/")
    await page.wait_for_selector('body[data-ready="1"]')
    assert await page.title() == "kernel console"

    # functions: the list by plugin, a form from the schema, the result with its usage
    await page.click('#function-list button[data-function="math.add"]')
    assert await page.inner_text("#function-name") == "math.add"
    assert await page.get_attribute("#arg-a", "type") == "number"
    await page.fill("#arg-a", "2")
    await page.fill("#arg-b", "3.5")
    await page.click("#function-run")
    await expect(page.locator("#function-result")).to_have_text("5.5")
    assert "tokens: 0 in / 0 out" in await page.inner_text("#function-usage")
    await page.click('#function-list button[data-function="text.truncate"]')  # another schema: a default value
    assert await page.input_value("#arg-max_chars") != ""
    await page.fill("#function-filter", "publish")
    assert await page.locator("#function-list button").count() == 1
    assert "approval" in await page.inner_text('#function-list button[data-function="ops.publish"]')
    await page.fill("#function-filter", "")
    await page.click('#function-list button[data-function="math.add"]')
    await page.fill("#arg-a", "2")
    await page.fill("#arg-b", "3.5")
    await page.click("#function-run")
    await expect(page.locator("#function-result")).to_have_text("5.5")
    await shoot(page, "1-function")

    # chat: the kernel model streams, the tool call shows as it happens
    await page.click('#tabs button[data-tab="chat"]')
    await page.wait_for_selector('#chat-model option[value="kernel"]', state="attached")
    await page.select_option("#chat-model", "kernel")
    await page.fill("#chat-input", 'use math-add with {"a": 2, "b": 3}')
    await page.press("#chat-input", "Enter")
    await page.wait_for_selector(".tool.finished")
    card = await page.inner_text(".tool.finished")
    assert "math.add" in card and '{"a": 2, "b": 3}' in card and "← 5.0" in card
    await expect(page.locator(".msg.assistant")).to_have_text(["The result is 5.0."])
    order = await page.eval_on_selector_all("#chat-log > *", "nodes => nodes.map(n => n.className)")
    assert order[:3] == ["msg user", "tool finished", "msg assistant"]
    await shoot(page, "2-chat")

    # plans: the graph before the run, live status, the approval asked and given
    await page.click('#tabs button[data-tab="plans"]')
    await page.click("#plan-json-box summary")
    await page.fill("#plan-json", json.dumps(GATED_PLAN))
    await page.click("#plan-validate")
    await page.wait_for_selector('#plan-svg g[data-step="s3"].gated')
    assert await page.locator("#plan-svg g.node").count() == 3
    assert await page.locator("#plan-svg path.edge").count() == 1
    assert await page.is_enabled("#plan-run")
    await shoot(page, "3-plan-graph")
    await page.click("#plan-run")
    await page.wait_for_selector(".approval button.approve")
    assert "s3: ops.publish" in await page.inner_text(".approval pre")
    assert await page.get_attribute('#plan-svg g[data-step="s3"]', "data-status") == "waiting"
    assert await page.get_attribute('#plan-svg g[data-step="s1"]', "data-status") is None  # nothing ran yet
    await shoot(page, "4-plan-approval")
    await page.click(".approval button.approve")
    await page.wait_for_selector('#plan-svg g[data-step="s3"][data-status="done"]')
    await expect(page.locator("#plan-result-text")).to_have_text("published: 5.0")
    statuses = await page.eval_on_selector_all("#plan-svg g.node", "nodes => nodes.map(n => n.dataset.status)")
    assert statuses == ["done", "done", "done"]
    assert await page.inner_text(".approval .verdict") == "approved"
    await shoot(page, "5-plan-done")

    # runs: the log of what happened
    await page.click('#tabs button[data-tab="runs"]')
    await page.wait_for_selector("#runs-table tbody tr")
    kinds = await page.eval_on_selector_all("#runs-table tbody tr td:nth-child(2)",
                                            "cells => cells.map(c => c.textContent)")
    assert {"invoke", "chat", "plan"} <= set(kinds)
    await page.click("#runs-table tbody tr")
    await page.wait_for_selector("#run-detail:not(.hidden)")
    await shoot(page, "6-runs")
    # the log view of the journal (`kernel serve` journals every run, as every kernel command)
    for _ in range(20):  # the journal is written by a background thread: refresh until it shows
        if "from the journal" in await page.inner_text("#runs-source"):
            break
        await page.click("#runs-refresh")
        await page.wait_for_timeout(250)
    await expect(page.locator("#runs-source")).to_contain_text("from the journal")
    journaled = page.locator("#runs-table tbody tr", has_text="(journal)").filter(has_text="math.add").last
    assert await journaled.locator("td.status-ok").count() == 1
    await journaled.click()
    await expect(page.locator("#run-detail")).to_contain_text('"source": "journal"')
    assert '"events"' in await page.inner_text("#run-detail")
    assert page.problems == []


async def test_the_console_shows_errors_as_the_server_words_them(server: Served, page: Any) -> None:
    await page.goto(server.url + "/")
    await page.wait_for_selector('body[data-ready="1"]')
    await page.click('#function-list button[data-function="math.divide"]')
    await page.fill("#arg-a", "1")
    await page.fill("#arg-b", "0")
    await page.click("#function-run")
    await page.wait_for_selector("#function-result.error")
    assert "invalid argument" in await page.inner_text("#function-result")
    await page.click('#tabs button[data-tab="plans"]')
    await page.click("#plan-json-box summary")
    await page.fill("#plan-json", json.dumps({"goal": "x", "steps": [{"id": "s1", "function": "math.nope"}]}))
    await page.click("#plan-validate")
    await page.wait_for_selector("#plan-problems li")
    assert "math.nope" in await page.inner_text("#plan-problems")
    assert not await page.is_enabled("#plan-run")
    page.problems[:] = [p for p in page.problems if "422" not in p and "400" not in p]
    assert page.problems == []
