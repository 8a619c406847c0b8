// The kernel's web console: plain JavaScript, no framework, no build step. Every value
// shown comes from the server and is put in the page as text (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { functions: [], current: null, chat: [], chatAbort: null, plan: null, runId: null, graph: null };

// --- helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function headers(json = true) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function notice(text) {
  const box = $("notice");
  box.textContent = text || "";
  box.classList.toggle("hidden", !text);
}

function problemText(body, status) {
  if (body && typeof body === "object") {
    let text = (body.title || "error") + (body.detail ? ": " + body.detail : "");
    if (Array.isArray(body.problems)) text += "\n- " + body.problems.join("\n- ");
    return text;
  }
  return "HTTP " + status;
}

async function api(method, path, body) {
  const response = await fetch(path, { method, headers: headers(body !== undefined),
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) throw new Error(problemText(data, response.status));
  return data;
}

// Server-sent events of a POST: calls onEvent(eventName, data) for each frame.
async function stream(path, body, onEvent, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body), signal });
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    throw new Error(problemText(data, response.status));
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const text = data.join("\n");
      if (text === "[DONE]") return;
      let parsed = text;
      try { parsed = JSON.parse(text); } catch (e) { /* plain text */ }
      onEvent(event, parsed);
    }
  }
}

function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function usageText(usage, cost) {
  if (!usage) return "";
  const tokens = `${usage.input_tokens ?? usage.prompt_tokens ?? 0} in / ${usage.output_tokens ?? usage.completion_tokens ?? 0} out`;
  return `tokens: ${tokens}` + (cost === null || cost === undefined ? ", cost: unpriced" : `, cost: $${Number(cost).toFixed(6)}`);
}

// --- tabs ------------------------------------------------------------------------------------

function openTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.id === "tab-" + name);
  if (name === "runs") loadRuns();
  if (name === "chat" && !$("chat-model").options.length) loadModels();
}

// --- functions -------------------------------------------------------------------------------

async function loadFunctions() {
  try {
    const data = await api("GET", "/v1/functions");
    state.functions = data.functions;
    notice("");
    renderFunctionList();
  } catch (error) {
    notice("Cannot list functions: " + error.message);
  }
}

function renderFunctionList() {
  const filter = $("function-filter").value.trim().toLowerCase();
  const list = $("function-list");
  list.replaceChildren();
  let plugin = null;
  for (const fn of state.functions) {
    if (filter && !(fn.name + " " + fn.description).toLowerCase().includes(filter)) continue;
    if (fn.plugin !== plugin) {
      plugin = fn.plugin;
      list.append(el("h4", { text: plugin }));
    }
    const button = el("button", { type: "button", "data-function": fn.name, onclick: () => selectFunction(fn) }, fn.function);
    if (fn.needs_approval) button.append(el("span", { class: "badge", text: "approval" }));
    if (state.current && state.current.name === fn.name) button.classList.add("active");
    list.append(button);
  }
}

function selectFunction(fn) {
  state.current = fn;
  renderFunctionList();
  $("function-empty").classList.add("hidden");
  $("function-view").classList.remove("hidden");
  $("function-output").classList.add("hidden");
  $("function-name").textContent = fn.name + (fn.kind === "prompt" ? "  (prompt)" : "");
  $("function-description").textContent = fn.description || "";
  const fields = $("function-fields");
  fields.replaceChildren();
  const schema = fn.parameters || {};
  const required = new Set(schema.required || []);
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    fields.append(field(name, resolve(prop, schema), required.has(name)));
  }
  if (!Object.keys(schema.properties || {}).length) fields.append(el("p", { class: "muted", text: "No arguments." }));
}

function resolve(prop, root) {
  if (prop && prop.$ref && prop.$ref.startsWith("#/$defs/")) return (root.$defs || {})[prop.$ref.slice(8)] || {};
  return prop || {};
}

// One input per parameter, chosen from its JSON schema.
function field(name, prop, required) {
  const id = "arg-" + name;
  const kind = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
  const label = el("label", { for: id }, name);
  if (required) label.append(el("span", { class: "hint", text: "required" }));
  if (prop.description) label.append(el("span", { class: "hint", text: prop.description }));
  let input;
  if (Array.isArray(prop.enum)) {
    input = el("select", { id });
    if (!required) input.append(el("option", { value: "", text: "" }));
    for (const option of prop.enum) input.append(el("option", { value: JSON.stringify(option), text: String(option) }));
    if (prop.default !== undefined) input.value = JSON.stringify(prop.default);
    input.dataset.kind = "enum";
  } else if (kind === "boolean") {
    input = el("input", { id, type: "checkbox" });
    input.checked = prop.default === true;
    input.dataset.kind = "boolean";
  } else if (kind === "integer" || kind === "number") {
    input = el("input", { id, type: "number", step: kind === "integer" ? "1" : "any" });
    if (prop.default !== undefined && prop.default !== null) input.value = prop.default;
    input.dataset.kind = kind;
  } else if (kind === "string") {
    input = el("input", { id, type: "text" });
    if (prop.default !== undefined && prop.default !== null) input.value = prop.default;
    input.dataset.kind = "string";
  } else {
    input = el("textarea", { id, rows: "3", placeholder: "JSON" });
    if (prop.default !== undefined) input.value = JSON.stringify(prop.default);
    input.dataset.kind = "json";
  }
  input.name = name;
  input.dataset.required = required ? "1" : "";
  return el("div", { class: "field" }, label, input);
}

function collectArguments() {
  const args = {};
  for (const input of $("function-fields").querySelectorAll("[name]")) {
    const kind = input.dataset.kind;
    if (kind === "boolean") { args[input.name] = input.checked; continue; }
    const raw = input.value;
    if (raw === "" && !input.dataset.required) continue;
    if (kind === "integer" || kind === "number") args[input.name] = raw === "" ? null : Number(raw);
    else if (kind === "enum") args[input.name] = raw === "" ? null : JSON.parse(raw);
    else if (kind === "json") {
      try { args[input.name] = JSON.parse(raw); } catch (e) { throw new Error(`${input.name}: not valid JSON`); }
    } else args[input.name] = raw;
  }
  return args;
}

async function runFunction(event) {
  event.preventDefault();
  const fn = state.current;
  const result = $("function-result");
  $("function-output").classList.remove("hidden");
  result.classList.remove("error");
  result.textContent = "";
  $("function-usage").textContent = "";
  $("function-cost").textContent = "";
  $("function-runid").textContent = "";
  $("function-run").disabled = true;
  try {
    const body = { arguments: collectArguments() };
    const path = `/v1/functions/${encodeURIComponent(fn.name)}/invoke`;
    if (fn.streams) {
      await stream(path + "?stream=true", body, (name, data) => {
        if (name === "delta") result.textContent += data.text;
        else if (name === "result") showResult(data);
        else if (name === "error") throw new Error(problemText(data));
      });
    } else {
      showResult(await api("POST", path, body));
    }
  } catch (error) {
    result.classList.add("error");
    result.textContent = error.message;
  } finally {
    $("function-run").disabled = false;
  }
}

function showResult(data) {
  $("function-result").textContent = show(data.value);
  $("function-usage").textContent = usageText(data.usage, data.cost);
  $("function-runid").textContent = data.run ? "run " + data.run : "";
}

// --- chat ------------------------------------------------------------------------------------

async function loadModels() {
  try {
    const data = await api("GET", "/v1/models");
    const select = $("chat-model");
    select.replaceChildren();
    for (const model of data.data) {
      const kind = model.kernel && model.kernel.kind === "agent" ? "kernel functions as tools" : "chat service";
      select.append(el("option", { value: model.id, text: `${model.id}  (${kind})` }));
    }
  } catch (error) {
    notice("Cannot list models: " + error.message);
  }
}

function chatBubble(role, text) {
  const bubble = el("div", { class: "msg " + role, text });
  $("chat-log").append(bubble);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return bubble;
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || state.chatAbort) return;
  $("chat-input").value = "";
  state.chat.push({ role: "user", content: text });
  chatBubble("user", text);
  let bubble = null;
  let answer = "";
  const tools = {};
  const controller = new AbortController();
  state.chatAbort = controller;
  $("chat-stop").classList.remove("hidden");
  $("chat-send").disabled = true;
  try {
    await stream("/v1/chat/completions", { model: $("chat-model").value, messages: state.chat, stream: true,
                                           stream_options: { include_usage: true } }, (name, data) => {
      if (data && data.error) throw new Error(problemText(data));
      const kernel = data.kernel;
      if (kernel && kernel.event === "tool_call") {
        const card = el("div", { class: "tool", "data-call": kernel.id, text: `→ ${kernel.function}(${kernel.arguments})` });
        tools[kernel.id] = card;
        $("chat-log").append(card);
        bubble = null;
      } else if (kernel && kernel.event === "tool_result") {
        const card = tools[kernel.id];
        if (card) {
          card.classList.add(kernel.is_error ? "failed" : "finished");
          card.textContent += `\n← ${kernel.content}`;
        }
      }
      for (const choice of data.choices || []) {
        const delta = choice.delta || {};
        if (delta.content) {
          if (!bubble) bubble = chatBubble("assistant", "");
          answer += delta.content;
          bubble.textContent += delta.content;
        }
        for (const call of delta.tool_calls || []) {
          if (call.function && call.function.name) {
            const card = el("div", { class: "tool", text: `model asks: ${call.function.name}(` });
            tools["model-" + call.index] = card;
            $("chat-log").append(card);
          }
          if (call.function && call.function.arguments) tools["model-" + call.index].textContent += call.function.arguments;
        }
      }
      if (data.usage) {
        $("chat-log").append(el("div", { class: "meta", text: usageText(data.usage, null).replace(", cost: unpriced", "") }));
      }
      $("chat-log").scrollTop = $("chat-log").scrollHeight;
    }, controller.signal);
    state.chat.push({ role: "assistant", content: answer });
  } catch (error) {
    if (error.name !== "AbortError") chatBubble("assistant error", error.message);
  } finally {
    state.chatAbort = null;
    $("chat-stop").classList.add("hidden");
    $("chat-send").disabled = false;
  }
}

// --- plans -----------------------------------------------------------------------------------

const EXAMPLE_PLAN = {
  goal: "add, then multiply",
  steps: [
    { id: "s1", function: "math.add", arguments: { a: 2, b: 3 } },
    { id: "s2", function: "math.multiply", arguments: { a: { $step: "s1" }, b: 10 } },
  ],
  output: "s2",
};

function showPlan(data) {
  const problems = $("plan-problems");
  problems.replaceChildren();
  for (const problem of data.problems || []) problems.append(el("li", { text: problem }));
  if (data.plan) $("plan-json").value = JSON.stringify(data.plan, null, 2);
  state.plan = data.valid ? data.plan : null;
  $("plan-run").disabled = !data.valid;
  $("plan-status").textContent = data.valid ? "valid: ready to run" : "invalid plan";
  $("plan-result").classList.add("hidden");
  $("plan-approvals").replaceChildren();
  drawGraph(data.graph);
}

async function makePlan() {
  const goal = $("plan-goal").value.trim();
  if (!goal) return;
  $("plan-status").textContent = "asking the model for a plan...";
  try {
    showPlan(await api("POST", "/v1/plans", { goal }));
  } catch (error) {
    $("plan-status").textContent = "";
    notice(error.message);
  }
}

async function validatePlan() {
  let plan;
  try { plan = JSON.parse($("plan-json").value); } catch (e) { notice("The plan is not valid JSON"); return; }
  try {
    notice("");
    showPlan(await api("POST", "/v1/plans", { plan }));
  } catch (error) {
    notice(error.message);
  }
}

// Steps in columns by depth (a step right of everything it uses), edges as arrows.
function drawGraph(graph) {
  state.graph = graph;
  const box = $("plan-graph");
  box.replaceChildren();
  if (!graph || !graph.nodes.length) return;
  const level = {};
  const incoming = {};
  for (const [from, to] of graph.edges) (incoming[to] = incoming[to] || []).push(from);
  const depth = (id, seen = new Set()) => {
    if (level[id] !== undefined) return level[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    level[id] = Math.max(-1, ...(incoming[id] || []).map((d) => depth(d, seen))) + 1;
    return level[id];
  };
  const columns = {};
  for (const node of graph.nodes) (columns[depth(node.id)] = columns[depth(node.id)] || []).push(node);
  const W = 190, H = 52, GX = 60, GY = 24;
  const place = {};
  let rows = 0;
  for (const [col, nodes] of Object.entries(columns)) {
    nodes.forEach((node, row) => { place[node.id] = { x: 20 + col * (W + GX), y: 20 + row * (H + GY) }; });
    rows = Math.max(rows, nodes.length);
  }
  const width = 40 + Object.keys(columns).length * (W + GX) - GX;
  const height = 40 + rows * (H + GY) - GY;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "plan-svg" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
  defs.append(marker);
  root.append(defs);
  for (const [from, to] of graph.edges) {
    const a = place[from], b = place[to];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    root.append(svg("path", { d: `M${x1},${y1} C${x1 + 30},${y1} ${x2 - 30},${y2} ${x2},${y2}`, class: "edge", "marker-end": "url(#arrow)" }));
  }
  for (const node of graph.nodes) {
    const p = place[node.id];
    const g = svg("g", { class: "node" + (node.needs_approval ? " gated" : ""), "data-step": node.id, transform: `translate(${p.x},${p.y})` });
    g.append(svg("rect", { width: W, height: H, rx: "6" }));
    const title = svg("text", { x: "10", y: "20" });
    title.textContent = node.id + (node.needs_approval ? "  (needs approval)" : "");
    const fn = svg("text", { x: "10", y: "38", class: "fn" });
    fn.textContent = node.function;
    const status = svg("title");
    status.textContent = `${node.id}: ${node.function}`;
    g.append(title, fn, status);
    root.append(g);
  }
  box.append(root);
}

function stepStatus(step, status, detail) {
  const node = document.querySelector(`#plan-svg g[data-step="${CSS.escape(step)}"]`);
  if (!node) return;
  node.classList.remove("running", "done", "failed", "skipped", "waiting");
  node.classList.add(status);
  node.dataset.status = status;
  const title = node.querySelector("title");
  if (title) title.textContent = `${step}: ${status}` + (detail ? `\n${detail}` : "");
}

async function runPlan() {
  if (!state.plan) return;
  $("plan-run").disabled = true;
  $("plan-approvals").replaceChildren();
  $("plan-result").classList.add("hidden");
  $("plan-status").textContent = "running...";
  try {
    await stream("/v1/plans/run", { plan: state.plan }, (name, data) => {
      if (name === "run") { state.runId = data.run; $("plan-status").textContent = "running: " + data.run; }
      else if (name === "step") stepStatus(data.step, data.status, data.error || (data.output !== undefined ? show(data.output) : ""));
      else if (name === "approval") askApproval(data);
      else if (name === "approval_decided") {
        const card = document.querySelector(`[data-approval="${CSS.escape(data.approval)}"]`);
        if (card) { card.querySelector(".verdict").textContent = data.approved ? "approved" : "refused"; card.querySelectorAll("button").forEach((b) => { b.disabled = true; }); }
      } else if (name === "run_finished") finishRun(data);
      else if (name === "error") finishRun({ status: "failed", error: data });
    });
  } catch (error) {
    $("plan-status").textContent = "";
    notice(error.message);
  } finally {
    $("plan-run").disabled = !state.plan;
  }
}

function askApproval(data) {
  const what = data.kind === "plan"
    ? "The plan calls functions that need approval:\n" + data.steps.map((s) => `${s.step}: ${s.function}(${JSON.stringify(s.arguments)})`).join("\n")
    : `Step ${data.step} calls ${data.function}(${JSON.stringify(data.arguments)})`;
  if (data.kind === "plan") for (const s of data.steps) stepStatus(s.step, "waiting");
  const answer = (approved) => api("POST", `/v1/runs/${encodeURIComponent(state.runId)}/approve`, { approval: data.approval, approved })
    .catch((error) => notice(error.message));
  const card = el("div", { class: "approval", "data-approval": data.approval },
    el("strong", { text: "Approval needed" }), el("pre", { text: what }),
    el("button", { type: "button", class: "approve", onclick: () => answer(true) }, "Approve"), " ",
    el("button", { type: "button", class: "secondary deny", onclick: () => answer(false) }, "Refuse"), " ",
    el("span", { class: "verdict muted" }));
  $("plan-approvals").append(card);
  $("plan-status").textContent = "waiting for approval";
}

function finishRun(data) {
  $("plan-status").textContent = `${data.status}` + (data.usage ? " · " + usageText(data.usage, data.cost) : "");
  $("plan-result").classList.remove("hidden");
  $("plan-result-text").textContent = data.status === "done" ? show(data.result) : problemText(data.error || {});
  if (data.status !== "done" && state.graph) {
    for (const node of document.querySelectorAll("#plan-svg g.waiting")) stepStatus(node.dataset.step, "skipped");
  }
}

// --- runs ------------------------------------------------------------------------------------

async function loadRuns() {
  try {
    const data = await api("GET", "/v1/runs");
    const body = $("runs-table").querySelector("tbody");
    body.replaceChildren();
    const journal = Array.isArray(data.journal) ? data.journal : [];
    $("runs-source").textContent = data.journal === null ? "runs of this server (in memory)" : `runs of this server and ${journal.length} from the journal`;
    for (const run of [...data.runs, ...journal]) {
      const when = run.created ? new Date(run.created * 1000).toLocaleTimeString() : "";
      const tokens = run.usage ? String(run.usage.total_tokens ?? "") : "";
      const row = el("tr", { "data-run": run.id || "", onclick: () => showRun(run) },
        el("td", { text: when }), el("td", { text: (run.kind || "") + (run.source === "journal" ? " (journal)" : "") }), el("td", { text: run.title || run.name || "" }),
        el("td", { class: "status-" + (run.status || ""), text: run.status || "" }), el("td", { text: tokens }),
        el("td", { text: run.cost === null || run.cost === undefined ? "" : "$" + Number(run.cost).toFixed(6) }));
      body.append(row);
    }
  } catch (error) {
    notice("Cannot list runs: " + error.message);
  }
}

async function showRun(run) {
  const detail = $("run-detail");
  detail.classList.remove("hidden");
  if (!run.id) { detail.textContent = show(run); return; }  // a journal that could not be read
  try {
    detail.textContent = show(await api("GET", `/v1/runs/${encodeURIComponent(run.id)}`));
  } catch (error) {
    detail.textContent = error.message;
  }
}

// --- start -----------------------------------------------------------------------------------

function start() {
  const saved = sessionStorage.getItem("kernel-api-key");
  if (saved) $("api-key").value = saved;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("kernel-api-key", $("api-key").value.trim());
    loadFunctions();
    $("chat-model").replaceChildren();
  });
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => openTab(button.dataset.tab));
  $("function-filter").addEventListener("input", renderFunctionList);
  $("function-form").addEventListener("submit", runFunction);
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("chat-stop").addEventListener("click", () => state.chatAbort && state.chatAbort.abort());
  $("chat-clear").addEventListener("click", () => { state.chat = []; $("chat-log").replaceChildren(); });
  $("plan-make").addEventListener("click", makePlan);
  $("plan-validate").addEventListener("click", validatePlan);
  $("plan-run").addEventListener("click", runPlan);
  $("runs-refresh").addEventListener("click", loadRuns);
  $("plan-json").value = JSON.stringify(EXAMPLE_PLAN, null, 2);
  loadFunctions();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
