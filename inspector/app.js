// The inspector page: asks inspect_model.py's JSON API what the model computes and draws it.
// Plain browser JavaScript, no libraries. The API is documented in docs/inspector.md.
"use strict";

const BLUE = [33, 102, 172]; // attention weights and probabilities
const RED = [203, 24, 29]; // loss, and where the first model does better in a comparison
const GREEN = [35, 139, 69]; // the token that really comes next; where the second model does better
const MASKED = "#eeeeee"; // heatmap cells a query cannot see (the future)
const LOSS_SCALE = 5; // nats shown darkest in the loss strips (a uniform guess over 65 tokens is 4.2)

const state = {
  models: [], // /api/models
  limits: {},
  model: 0, // index of the model looked at
  trace: null, // /api/trace answer for the prompt
  selected: 0, // position looked at
  layer: 0,
  head: 0,
  attention: null, // /api/attention answer for state.layer
  compare: null, // index of the second model, if any
  compareTrace: null,
  steps: [], // generation steps received
  shownStep: null, // index of the step whose distribution is shown; null: the latest
  generation: null, // AbortController of the running generation
  request: 0, // number of the latest prompt request: older answers are ignored
};
// One id per tab, so the server runs at most one generation for it (a new one stops the old one).
const CLIENT = "tab-" + Math.random().toString(36).slice(2);

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------------
// Talking to the server

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({error: response.statusText}));
    throw new Error(answer.error);
  }
  return response;
}

async function postJSON(path, body) {
  return (await post(path, body)).json();
}

// ---------------------------------------------------------------------------------------------------
// Drawing helpers

function shade(colour, amount) {
  // White at 0, the colour at 1.
  const a = Math.max(0, Math.min(1, amount));
  const [r, g, b] = colour.map((c) => Math.round(255 + (c - 255) * a));
  return `rgb(${r}, ${g}, ${b})`;
}

function visible(text) {
  // Whitespace made visible, so a space or newline token can be seen and clicked.
  return text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5") || "\u2205";
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function tokenStrip(container, tokens, {background, title, onClick, selected} = {}) {
  // One box per token; a newline token also breaks the line, as in the text.
  container.replaceChildren();
  tokens.forEach((token, pos) => {
    const box = element("span", {class: "token", "data-pos": pos}, visible(token.text));
    if (background) {
      const amount = background(pos);
      box.style.background = amount.colour;
      if (amount.dark) box.classList.add("dark");
    }
    if (title) box.title = title(pos);
    if (pos === selected) box.classList.add("selected");
    if (onClick) box.addEventListener("click", () => onClick(pos));
    container.append(box);
    if (token.text.includes("\n")) container.append(element("br"));
  });
}

function bars(container, rows) {
  // rows: [{id, text, values: [{prob, colour, label}], mark}] drawn as labelled horizontal bars.
  container.replaceChildren();
  for (const row of rows) {
    const line = element("div", {class: "bar-row" + (row.mark ? " " + row.mark : ""), "data-token-id": row.id});
    line.append(element("span", {class: "bar-token"}, visible(row.text)));
    for (const value of row.values) {
      const track = element("span", {class: "bar-track"});
      const bar = element("span", {class: "bar"});
      bar.style.width = percent(value.prob);
      bar.style.background = shade(value.colour, 1);
      track.append(bar);
      line.append(track, element("span", {class: "bar-value", "data-prob": value.prob, title: value.label},
        percent(value.prob)));
    }
    container.append(line);
  }
}

// ---------------------------------------------------------------------------------------------------
// The prompt and the views that follow from it

async function analyse() {
  const text = $("prompt").value;
  const request = ++state.request;
  let trace;
  try {
    trace = await postJSON("/api/trace", {model: state.model, text}); // the server's number of candidates
  } catch (error) {
    if (request === state.request) showError(error.message);
    return;
  }
  if (request !== state.request) return; // the prompt changed while this was computed
  showError(null);
  state.trace = trace;
  state.selected = Math.min(state.selected, trace.tokens.length - 1);
  $("token-count").textContent = `${trace.tokens.length} of at most ${trace.model.block_size} tokens.`;
  renderPosition();
  await Promise.all([loadAttention(), loadComparison()]);
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function select(pos) {
  if (!state.trace) return;
  state.selected = Math.max(0, Math.min(state.trace.tokens.length - 1, pos));
  renderPosition();
  renderAttention();
  renderComparison();
}

function renderPosition() {
  const {trace, selected} = state;
  tokenStrip($("tokens"), trace.tokens, {selected, onClick: select});
  const here = trace.positions[selected];
  const token = trace.tokens[selected];
  const maxEntropy = Math.log2(trace.model.vocab_size);
  let summary = `After \u201c${visible(token.text)}\u201d (position ${selected}): entropy ` +
    `${here.entropy_bits.toFixed(2)} bits (0 is certain, ${maxEntropy.toFixed(2)} is a uniform guess). `;
  if (here.next) {
    summary += `The token that really comes next, \u201c${visible(here.next.text)}\u201d, is ranked ` +
      `${here.next.rank} with ${percent(here.next.prob)} (loss ${here.next.loss.toFixed(2)} nats).`;
  } else {
    summary += "This is the last token: what follows is the model's guess.";
  }
  $("next-summary").textContent = summary;
  const nextId = here.next ? here.next.id : null;
  bars($("next-bars"), here.top.map((c) => ({
    id: c.id, text: c.text, mark: c.id === nextId ? "actual" : "",
    values: [{prob: c.prob, colour: c.id === nextId ? GREEN : BLUE, label: `probability ${c.prob}`}],
  })));
  renderLens();
}

// ---------------------------------------------------------------------------------------------------
// Attention

async function loadAttention() {
  const request = state.request;
  const text = $("prompt").value;
  if (state.models[state.model].n_layer === 0) { // the bigram network: no blocks, so nothing attends
    state.attention = null;
    $("attention-text").replaceChildren(element("p", {class: "note"},
      "This model has no blocks (n_layer 0): each token's prediction reads only that token, so there is no attention to show."));
    $("heatmap").width = $("heatmap").height = 1;
    $("heatmap-caption").textContent = "";
    return;
  }
  try {
    const attention = await postJSON("/api/attention", {model: state.model, text, layer: state.layer});
    if (request !== state.request) return;
    state.attention = attention;
    renderAttention();
  } catch (error) {
    if (request === state.request) showError(error.message);
  }
}

function renderAttention() {
  const {attention, selected, head} = state;
  if (!attention || attention.tokens.length !== state.trace.tokens.length) return;
  const row = attention.heads[head][selected];
  tokenStrip($("attention-text"), attention.tokens, {
    selected,
    onClick: select,
    background: (pos) => pos <= selected
      ? {colour: shade(BLUE, row[pos]), dark: row[pos] > 0.5} : {colour: MASKED},
    title: (pos) => pos <= selected ? `weight ${percent(row[pos])}` : "masked: a later token",
  });
  const T = attention.tokens.length;
  const cell = Math.max(2, Math.floor(480 / T));
  drawHeatmap($("heatmap"), attention.heads[head], cell, selected);
  $("heatmap-caption").textContent = `Block ${state.layer + 1}, head ${head + 1}: queries (rows, top to bottom) ` +
    `\u00d7 keys (columns); the selected query's row is outlined. Click a row to select that position.`;
  const multiples = $("heads");
  multiples.replaceChildren();
  attention.heads.forEach((weights, h) => {
    const canvas = element("canvas", {"data-head": h, title: `head ${h + 1}`});
    drawHeatmap(canvas, weights, Math.max(1, Math.floor(120 / T)), null);
    if (h === head) canvas.classList.add("selected");
    canvas.addEventListener("click", () => { state.head = h; $("head").value = h; renderAttention(); });
    const box = element("div", {class: "multiple"});
    box.append(canvas, element("span", {class: "note"}, `head ${h + 1}`));
    multiples.append(box);
  });
}

function drawHeatmap(canvas, rows, cell, selected) {
  // rows[q] holds the weights from query q to keys 0..q; the cells above the diagonal are masked.
  const T = rows.length;
  canvas.width = canvas.height = T * cell;
  canvas.dataset.cell = cell;
  const context = canvas.getContext("2d");
  context.fillStyle = MASKED;
  context.fillRect(0, 0, T * cell, T * cell);
  rows.forEach((weights, q) => weights.forEach((w, k) => {
    context.fillStyle = shade(BLUE, w);
    context.fillRect(k * cell, q * cell, cell, cell);
  }));
  if (selected !== null) {
    context.strokeStyle = "rgb(230, 85, 13)";
    context.lineWidth = 2;
    context.strokeRect(1, selected * cell, T * cell - 2, cell);
  }
}

function heatmapCell(event) {
  const canvas = $("heatmap");
  const cell = Number(canvas.dataset.cell);
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width; // the canvas may be drawn smaller than its pixels
  return [Math.floor((event.clientY - box.top) * scale / cell), Math.floor((event.clientX - box.left) * scale / cell)];
}

// ---------------------------------------------------------------------------------------------------
// Logit lens

function renderLens() {
  const {trace, selected} = state;
  const lens = trace.lens;
  const table = $("lens-table");
  table.replaceChildren();
  const header = element("tr");
  for (const name of ["layer", "top predictions", "the real next token", "residual size"]) {
    header.append(element("th", {}, name));
  }
  table.append(header);
  const next = trace.positions[selected].next;
  lens.layers.forEach((name, layer) => {
    const row = element("tr");
    row.append(element("td", {}, name));
    const top = element("td", {class: "lens-top"});
    for (const c of lens.top[layer][selected]) {
      const chip = element("span", {class: "chip"}, `${visible(c.text)} ${percent(c.prob)}`);
      chip.style.background = shade(next && c.id === next.id ? GREEN : BLUE, c.prob);
      if (c.prob > 0.5) chip.classList.add("dark");
      top.append(chip);
    }
    row.append(top);
    row.append(element("td", {}, next
      ? `${percent(lens.next_prob[layer][selected])}, rank ${lens.next_rank[layer][selected]}` : "\u2014"));
    row.append(element("td", {}, lens.residual_norm[layer][selected].toFixed(1)));
    table.append(row);
  });

  const grid = $("lens-grid");
  grid.replaceChildren();
  grid.style.gridTemplateColumns = `max-content repeat(${trace.tokens.length}, 1.6em)`;
  grid.append(element("span", {class: "lens-label"}, "input"));
  trace.tokens.forEach((token, pos) => {
    const cell = element("span", {class: "lens-cell input" + (pos === selected ? " selected" : "")},
      visible(token.text));
    cell.addEventListener("click", () => select(pos));
    grid.append(cell);
  });
  lens.layers.forEach((name, layer) => {
    grid.append(element("span", {class: "lens-label"}, name));
    lens.top[layer].forEach((candidates, pos) => {
      const best = candidates[0];
      const isNext = pos + 1 < trace.tokens.length && best.id === trace.tokens[pos + 1].id;
      const cell = element("span", {
        class: "lens-cell" + (isNext ? " hit" : "") + (pos === selected ? " selected" : "") +
          (best.prob > 0.5 ? " dark" : ""),
        title: `${name}, position ${pos}: ${visible(best.text)} ${percent(best.prob)}`,
      }, visible(best.text));
      cell.style.background = shade(BLUE, best.prob);
      cell.addEventListener("click", () => select(pos));
      grid.append(cell);
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// Two models side by side

async function loadComparison() {
  if (state.compare === null) return;
  const request = state.request;
  let answer;
  try {
    answer = await postJSON("/api/trace", {model: state.compare, text: $("prompt").value});
  } catch (error) {
    answer = {error: error.message};
  }
  if (request !== state.request) return;
  state.compareTrace = answer;
  renderComparison();
}

function renderComparison() {
  if (state.compare === null || !state.compareTrace) return;
  const rows = $("compare-rows");
  rows.replaceChildren();
  const pair = [[state.model, state.trace], [state.compare, state.compareTrace]];
  const sameTokens = !state.compareTrace.error &&
    JSON.stringify(state.trace.tokens.map((t) => t.id)) === JSON.stringify(state.compareTrace.tokens.map((t) => t.id));
  for (const [index, trace] of pair) {
    const block = element("div", {class: "compare-model"});
    const model = state.models[index];
    block.append(element("h3", {}, `${index}: ${model.name}`));
    block.append(element("p", {class: "note"}, `${model.architecture}; ${model.parameters.toLocaleString()} ` +
      `parameters; ${model.tokenizer} tokenizer`));
    if (trace.error) {
      block.append(element("p", {class: "error"}, trace.error));
      rows.append(block);
      continue;
    }
    const loss = trace.loss;
    block.append(element("p", {"data-mean-loss": loss.mean},
      loss.mean === null ? "One token: nothing to predict." :
        `mean loss ${loss.mean.toFixed(3)} nats per token, ${loss.bits_per_char.toFixed(3)} bits per character`));
    const strip = element("div", {class: "tokens"});
    tokenStrip(strip, trace.tokens, {
      selected: sameTokens ? state.selected : null,
      onClick: sameTokens ? select : null,
      background: (pos) => lossShade(trace, pos),
      title: (pos) => pos === 0 ? "the first token is not predicted"
        : `loss ${trace.positions[pos - 1].next.loss.toFixed(3)} nats`,
    });
    block.append(strip);
    if (sameTokens) {
      const here = trace.positions[state.selected];
      block.append(element("p", {class: "note"}, `At position ${state.selected}: ` +
        here.top.slice(0, 5).map((c) => `${visible(c.text)} ${percent(c.prob)}`).join(", ")));
    }
    rows.append(block);
  }
  if (sameTokens) {
    const block = element("div", {class: "compare-model"});
    block.append(element("h3", {}, "difference"));
    block.append(element("p", {class: "note"}, `Loss of model ${state.compare} minus loss of model ${state.model}: ` +
      `green where model ${state.compare} predicted the token better, red where it did worse.`));
    const strip = element("div", {class: "tokens"});
    tokenStrip(strip, state.trace.tokens, {
      selected: state.selected,
      onClick: select,
      background: (pos) => {
        if (pos === 0) return {colour: MASKED};
        const d = state.compareTrace.positions[pos - 1].next.loss - state.trace.positions[pos - 1].next.loss;
        return {colour: shade(d < 0 ? GREEN : RED, Math.abs(d) / LOSS_SCALE), dark: Math.abs(d) > LOSS_SCALE / 2};
      },
      title: (pos) => pos === 0 ? "" : `difference ${(state.compareTrace.positions[pos - 1].next.loss -
        state.trace.positions[pos - 1].next.loss).toFixed(3)} nats`,
    });
    block.append(strip);
    rows.append(block);
  } else if (!state.compareTrace.error) {
    rows.append(element("p", {class: "note"}, "The two models cut the text into different tokens, so only " +
      "bits per character compare."));
  }
}

function lossShade(trace, pos) {
  if (pos === 0) return {colour: MASKED}; // nothing before the first token predicts it
  const loss = trace.positions[pos - 1].next.loss;
  return {colour: shade(RED, loss / LOSS_SCALE), dark: loss > LOSS_SCALE / 2};
}

// ---------------------------------------------------------------------------------------------------
// Generation, streamed

function optionalNumber(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function generate() {
  stopGeneration();
  const controller = new AbortController();
  state.generation = controller;
  state.steps = [];
  state.shownStep = null;
  const output = $("generated");
  output.replaceChildren();
  $("step-summary").textContent = "";
  $("step-bars").replaceChildren();
  $("generate").disabled = true;
  $("stop").disabled = false;
  setStatus("generating\u2026");
  const body = {
    model: state.model, text: $("prompt").value, client: CLIENT,
    max_new_tokens: optionalNumber("max-new-tokens"), temperature: optionalNumber("temperature") ?? 1,
    top_k: optionalNumber("top-k"), top_p: optionalNumber("top-p"), seed: optionalNumber("seed"),
  };
  try {
    const response = await post("/api/generate", body);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      pending += value;
      const lines = pending.split("\n");
      pending = lines.pop(); // an unfinished line waits for the rest
      for (const line of lines) {
        if (state.generation !== controller) return; // stopped: what was already received is dropped
        if (line) receive(JSON.parse(line));
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") setStatus("error: " + error.message, true);
  } finally {
    if (state.generation === controller) {
      state.generation = null;
      $("generate").disabled = false;
      $("stop").disabled = true;
    }
  }
}

function receive(message) {
  const output = $("generated");
  if (message.type === "start") {
    output.append(element("span", {class: "prompt-text"}, message.tokens.map((t) => t.text).join("")));
  } else if (message.type === "token") {
    const index = state.steps.length;
    state.steps.push(message);
    const piece = element("span", {class: "step", "data-step": index}, message.text);
    piece.addEventListener("click", () => { state.shownStep = index; showStep(); });
    output.append(piece);
    setStatus(`generating\u2026 ${state.steps.length} tokens`);
    if (state.shownStep === null) showStep();
  } else if (message.type === "end") {
    if (message.text) output.append(element("span", {class: "step"}, message.text));
    setStatus(message.reason === "length" ? `done: ${message.steps} tokens. Click a token to see its step.`
      : `stopped after ${message.steps} tokens.`);
  } else if (message.type === "error") {
    setStatus("error: " + message.error, true);
  }
}

function showStep() {
  const index = state.shownStep ?? state.steps.length - 1;
  const step = state.steps[index];
  if (!step) return;
  for (const node of document.querySelectorAll("#generated .step.selected")) node.classList.remove("selected");
  const piece = document.querySelector(`#generated .step[data-step="${index}"]`);
  if (piece) piece.classList.add("selected");
  const sampled = step.candidates.find((c) => c.id === step.id);
  $("step-summary").textContent = `Step ${index + 1}: sampled \u201c${visible(step.token)}\u201d, which had ` +
    `${percent(sampled.before)} before filtering and ${percent(sampled.after)} after; ${step.kept} of ` +
    `${state.models[state.model].vocab_size} tokens could be drawn. Grey: the model's distribution; ` +
    `blue: after temperature, top-k and top-p.`;
  bars($("step-bars"), step.candidates.map((c) => ({
    id: c.id, text: c.text, mark: c.id === step.id ? "sampled" : "",
    values: [{prob: c.before, colour: [150, 150, 150], label: "before filtering"},
      {prob: c.after, colour: BLUE, label: "after filtering"}],
  })));
}

function stopGeneration() {
  if (state.generation) {
    state.generation.abort(); // the server ends the generation when the stream closes
    setStatus(`stopped after ${state.steps.length} tokens.`);
  }
  state.generation = null;
  $("generate").disabled = false;
  $("stop").disabled = true;
}

function setStatus(text, isError = false) {
  const status = $("generate-status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// ---------------------------------------------------------------------------------------------------
// Start-up and controls

function fillSelect(select, count, label) {
  select.replaceChildren(...Array.from({length: count}, (_, i) => element("option", {value: i}, label(i))));
}

function chooseModel(index) {
  state.model = index;
  const model = state.models[index];
  $("model-info").textContent = `${model.architecture}; ${model.parameters.toLocaleString()} parameters; ` +
    `${model.tokenizer} tokenizer, ${model.vocab_size} tokens; context ${model.block_size} tokens`;
  $("prompt-limit").textContent = `Longer prompts are refused, not cut: the model reads at most ` +
    `${model.block_size} tokens.`;
  $("generate-limit").textContent = `At most ${state.limits.max_new_tokens} new tokens. Past ` +
    `${model.block_size} tokens the model reads only the newest ones (generate.py slides its context window).`;
  $("max-new-tokens").max = state.limits.max_new_tokens;
  state.layer = Math.max(0, Math.min(state.layer, model.n_layer - 1)); // 0 also for a model with no blocks
  state.head = Math.min(state.head, model.n_head - 1);
  fillSelect($("layer"), model.n_layer, (i) => `block ${i + 1}`); // counted from 1, as in the logit lens
  fillSelect($("head"), model.n_head, (i) => `head ${i + 1}`);
  $("layer").value = state.layer;
  $("head").value = state.head;
  const others = state.models.map((_, i) => i).filter((i) => i !== index);
  state.compare = others.length ? (others.includes(state.compare) ? state.compare : others[0]) : null;
  state.compareTrace = null;
  $("compare").hidden = state.compare === null;
  $("compare-none").hidden = state.compare !== null;
  const compareSelect = $("compare-model");
  compareSelect.replaceChildren(...others.map((i) => element("option", {value: i}, `${i}: ${state.models[i].name}`)));
  if (state.compare !== null) compareSelect.value = state.compare;
}

let typingTimer = null;

async function start() {
  const answer = await (await fetch("/api/models")).json();
  state.models = answer.models;
  state.limits = answer.limits;
  fillSelect($("model"), state.models.length, (i) => `${i}: ${state.models[i].name}`);
  chooseModel(0);

  $("model").addEventListener("change", (e) => { chooseModel(Number(e.target.value)); analyse(); });
  $("prompt").addEventListener("input", () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(analyse, 250); // wait until typing pauses
  });
  $("tokens").addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      select(state.selected + (e.key === "ArrowLeft" ? -1 : 1));
    }
  });
  $("layer").addEventListener("change", (e) => { state.layer = Number(e.target.value); loadAttention(); });
  $("head").addEventListener("change", (e) => { state.head = Number(e.target.value); renderAttention(); });
  $("heatmap").addEventListener("click", (e) => select(heatmapCell(e)[0]));
  $("heatmap").addEventListener("mousemove", (e) => {
    const [q, k] = heatmapCell(e);
    const rows = state.attention && state.attention.heads[state.head];
    if (!rows || q >= rows.length || k > q) return;
    const tokens = state.attention.tokens;
    $("heatmap-hover").textContent = `query ${q} \u201c${visible(tokens[q].text)}\u201d reads key ${k} ` +
      `\u201c${visible(tokens[k].text)}\u201d with weight ${percent(rows[q][k])}`;
  });
  $("compare-model").addEventListener("change", (e) => { state.compare = Number(e.target.value); loadComparison(); });
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", stopGeneration);
  await analyse();
}

start().catch((error) => showError("cannot reach the inspector server: " + error.message));
