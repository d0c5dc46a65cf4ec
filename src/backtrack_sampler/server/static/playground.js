// The playground: sends one streamed request with backtrack_events on and renders its events.
//
// Kept text arrives as ordinary deltas (with logprobs, for the alternatives of each token).
// A rewind arrives as a `backtrack_event` with the erased text and `char_offset`, the place
// in the final text where it was erased; it is drawn struck through at that place. A rewind
// that reaches further back than an earlier one erased the text around that earlier strike,
// so the earlier strike moves inside the new one. Offsets count code points, as the server does.
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;
let state = newState();
let renderQueued = false;
let pinned = null;

function newState() {
  return { chars: [], tokens: [], strikes: [], rewinds: 0, refused: 0, finish: null, stats: null,
           started: performance.now(), error: null, running: false };
}

// -- building the request ------------------------------------------------------------------
function lines(id) {
  return $(id).value.split("\n").map((s) => s.trim()).filter((s) => s.length > 0);
}

function numberField(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function buildRequest() {
  const raw = $("raw").checked;
  const body = { stream: true, backtrack_events: true, stream_options: { include_usage: true } };
  const model = $("model-name").dataset.id;
  if (model) body.model = model;
  if (raw) {
    body.prompt = $("prompt").value;
    body.logprobs = 5;
  } else {
    body.messages = [{ role: "user", content: $("prompt").value }];
    body.logprobs = true;
    body.top_logprobs = 5;
  }
  const settings = { max_tokens: "max-tokens", temperature: "temperature", top_p: "top-p", top_k: "top-k",
                     min_p: "min-p", seed: "seed" };
  for (const [name, id] of Object.entries(settings)) {
    const value = numberField(id);
    if (value !== null) body[name] = value;
  }
  const banned = lines("banned");
  if (banned.length) body.banned_strings = banned;
  const patterns = lines("banned-regex");
  if (patterns.length) body.banned_regex = patterns;
  const strategy = $("strategy").value;
  if (strategy) {
    let params = {};
    const text = $("strategy-params").value.trim();
    if (text) params = JSON.parse(text);  // a SyntaxError is shown to the user
    body.strategy = { name: strategy, params };
  }
  return { url: raw ? "/v1/completions" : "/v1/chat/completions", body, raw };
}

// -- consuming the stream -------------------------------------------------------------------
async function run(event) {
  event.preventDefault();
  if (controller) controller.abort();
  state = newState();
  hideAlternatives();
  let request;
  try {
    request = buildRequest();
  } catch (err) {
    state.error = `strategy parameters: ${err.message}`;
    render();
    return;
  }
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  controller = new AbortController();
  state.running = true;
  render();
  try {
    const response = await fetch(request.url, { method: "POST", headers, body: JSON.stringify(request.body),
                                                 signal: controller.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      state.error = (body && body.error && body.error.message) || `HTTP ${response.status}`;
      if (body && body.error && body.error.code === "no_chat_template") {
        state.error += ' — tick "raw prompt" to send the prompt as is';  // as generate says "(use --raw)"
      }
      return;
    }
    await readEvents(response, (data) => handleChunk(data, request.raw));
  } catch (err) {
    if (err.name === "AbortError") state.finish = state.finish || "stopped";
    else state.error = String(err);
  } finally {
    state.running = false;
    controller = null;
    render();
  }
}

async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data !== "[DONE]") onData(JSON.parse(data));
      }
    }
    scheduleRender();
  }
}

function handleChunk(chunk, raw) {
  if (chunk.error) {
    state.error = chunk.error.message;
    return;
  }
  for (const choice of chunk.choices || []) {
    if (choice.backtrack_event) addBacktrack(choice.backtrack_event);
    const text = raw ? choice.text : choice.delta && choice.delta.content;
    if (text) addText(text, tokenInfos(choice.logprobs, raw));
    if (choice.finish_reason) state.finish = choice.finish_reason;
    if (choice.backtrack_stats) state.stats = choice.backtrack_stats;
  }
}

function tokenInfos(logprobs, raw) {
  if (!logprobs) return [];
  if (raw) {
    return logprobs.tokens.map((text, i) => ({
      text,
      logprob: logprobs.token_logprobs[i],
      top: Object.entries(logprobs.top_logprobs[i] || {}).sort((a, b) => b[1] - a[1]),
    }));
  }
  return logprobs.content.map((entry) => ({
    text: entry.token,
    logprob: entry.logprob,
    top: entry.top_logprobs.map((alt) => [alt.token, alt.logprob]),
  }));
}

function addText(text, infos) {
  const chars = Array.from(text);
  let start = state.chars.length;
  state.chars.push(...chars);
  if (infos.length && infos.map((t) => t.text).join("") === text) {
    for (const info of infos) {
      const n = Array.from(info.text).length;
      state.tokens.push({ start, end: start + n, logprob: info.logprob, top: info.top });
      start += n;
    }
  } else {
    state.tokens.push({ start, end: start + chars.length, logprob: null, top: [] });
  }
}

function addBacktrack(event) {
  if (event.type === "rewind_refused") {
    state.refused += 1;
    return;
  }
  if (event.type !== "rewind") return;
  state.rewinds += 1;
  const strike = { offset: event.char_offset, text: event.suppressed_text, reason: event.reason,
                   strategy: event.strategy, children: [] };
  const kept = [];
  for (const earlier of state.strikes) {
    if (earlier.offset > event.char_offset) {
      strike.children.push({ ...earlier, offset: earlier.offset - event.char_offset });
    } else {
      kept.push(earlier);
    }
  }
  kept.push(strike);
  state.strikes = kept;
}

// -- rendering ------------------------------------------------------------------------------
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function byOffset(a, b) {
  return a.offset - b.offset;
}

function strikeNode(strike) {
  const del = document.createElement("del");
  del.className = "rewound";
  del.title = `${strike.reason || "rewound"} (${strike.strategy})`;
  const chars = Array.from(strike.text);
  let at = 0;
  for (const child of [...strike.children].sort(byOffset)) {
    const cut = Math.min(child.offset, chars.length);
    del.append(chars.slice(at, cut).join(""), strikeNode(child));
    at = cut;
  }
  del.append(chars.slice(at).join(""));
  return del;
}

function tokenNode(token, index) {
  const span = document.createElement("span");
  span.className = "token";
  span.textContent = state.chars.slice(token.start, token.end).join("");
  span.dataset.index = String(index);
  if (pinned === index) span.classList.add("pinned");
  return span;
}

function render() {
  const output = $("output");
  const nodes = [];
  const strikes = [...state.strikes].sort(byOffset);
  let next = 0;
  state.tokens.forEach((token, index) => {
    while (next < strikes.length && strikes[next].offset <= token.start) nodes.push(strikeNode(strikes[next++]));
    nodes.push(tokenNode(token, index));
  });
  while (next < strikes.length) nodes.push(strikeNode(strikes[next++]));
  output.replaceChildren(...nodes);

  $("error").hidden = !state.error;
  $("error").textContent = state.error || "";
  $("run").disabled = state.running;
  $("stop").disabled = !state.running;
  renderSummary();
}

function renderSummary() {
  const summary = $("summary");
  const stats = state.stats;
  const tokens = stats ? stats.tokens : state.tokens.length;
  const seconds = (performance.now() - state.started) / 1000;
  const speed = stats ? stats.tokens_per_second : tokens / Math.max(seconds, 1e-3);
  const parts = [`tokens: ${tokens}`, `rewinds: ${state.rewinds}`];
  if (state.refused) parts.push(`refused: ${state.refused}`);
  parts.push(`${speed.toFixed(1)} tokens/s`);
  if (stats) parts.push(`rewound tokens: ${stats.tokens_rewound}`);
  if (state.running) {
    summary.dataset.state = "running";
    summary.textContent = `generating… ${parts.join(" · ")}`;
  } else if (state.error) {
    summary.dataset.state = "error";
    summary.textContent = "failed";
  } else if (state.finish) {
    summary.dataset.state = "done";
    summary.textContent = `finished (${state.finish}) · ${parts.join(" · ")}`;
  }
}

// -- alternatives of a token ------------------------------------------------------------------
function percent(logprob) {
  return `${(100 * Math.exp(logprob)).toFixed(1)}%`;
}

function showAlternatives(span, index) {
  const token = state.tokens[index];
  if (!token) return;
  const box = $("alternatives");
  const chosen = state.chars.slice(token.start, token.end).join("");
  const table = document.createElement("table");
  const rows = token.top.length ? token.top : [[chosen, token.logprob]];
  for (const [text, logprob] of rows) {
    const row = table.insertRow();
    if (text === chosen) row.className = "chosen";
    row.insertCell().textContent = JSON.stringify(text);
    row.insertCell().textContent = logprob === null || logprob === undefined ? "?" : percent(logprob);
    row.cells[1].className = "p";
  }
  box.replaceChildren(table);
  const rect = span.getBoundingClientRect();
  box.style.left = `${rect.left + window.scrollX}px`;
  box.style.top = `${rect.bottom + window.scrollY + 4}px`;
  box.hidden = false;
}

function hideAlternatives() {
  pinned = null;
  $("alternatives").hidden = true;
}

function tokenFromEvent(event) {
  const span = event.target.closest ? event.target.closest(".token") : null;
  return span ? [span, Number(span.dataset.index)] : [null, -1];
}

$("output").addEventListener("mouseover", (event) => {
  const [span, index] = tokenFromEvent(event);
  if (span && pinned === null) showAlternatives(span, index);
});
$("output").addEventListener("mouseleave", () => {
  if (pinned === null) $("alternatives").hidden = true;
});
$("output").addEventListener("click", (event) => {
  const [span, index] = tokenFromEvent(event);
  if (!span) return;
  if (pinned === index) {
    hideAlternatives();
  } else {
    pinned = index;
    showAlternatives(span, index);
  }
  render();
});

// -- wiring ----------------------------------------------------------------------------------
$("controls").addEventListener("submit", run);
$("stop").addEventListener("click", () => {
  if (controller) controller.abort();
});
$("api-key").value = localStorage.getItem("backtrack-sampler-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("backtrack-sampler-api-key", $("api-key").value);
  loadModel();
});

async function loadModel() {
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  try {
    const response = await fetch("/v1/models", { headers });
    if (!response.ok) return;
    const body = await response.json();
    const id = body.data && body.data[0] && body.data[0].id;
    if (id) {
      $("model-name").dataset.id = id;
      $("model-name").textContent = `model: ${id}`;
    }
    showSamplingDefaults(body.data[0].sampling_defaults);
  } catch (err) {
    // the page still works: requests then name no model
  }
}

// The sampling fields start from the model's recommended values (else llama.cpp's defaults), as
// generate and batch do; a field the user already changed is left alone.
function showSamplingDefaults(defaults) {
  if (!defaults) return;
  const fields = { temperature: "temperature", top_p: "top-p", top_k: "top-k", min_p: "min-p" };
  for (const [name, id] of Object.entries(fields)) {
    const input = $(id);
    if (typeof defaults[name] === "number" && input.value === input.defaultValue) input.value = defaults[name];
  }
  if (defaults.source) $("sampling-source").textContent = `(${defaults.source})`;
}

loadModel();
