// zhserve web UI: plain browser JavaScript, no build step, no network except zhserve's own API.
//
// Offsets from the API are code-point indices; JavaScript strings are UTF-16. Every slice of the
// analysed text therefore goes through an array of code points (Array.from), never String.slice.
"use strict";

(function () {
  const STREAM_THRESHOLD = 2000; // code points; longer texts use /v1/analyze/stream
  const TASKS = ["ner", "sentiment"];
  const KNOWN_LABELS = ["PER", "LOC", "ORG"];
  const LABEL_NAMES = { PER: "人名 Person", LOC: "地名 Location", ORG: "机构 Organisation" };
  const EXTRA_COLOURS = ["#c9a2ff", "#ffb15c", "#8dff7a", "#ff8f8f"];

  const $ = (selector) => document.querySelector(selector);
  const app = $("#app");
  const input = $("#input");
  const analyzeButton = $("#analyze");
  const errorBox = $("#error");
  const progress = $("#progress");
  const progressTrack = progress.querySelector(".progress-track");
  const progressFill = progress.querySelector(".progress-fill");
  const progressText = progress.querySelector(".progress-text");
  const verdict = $("#verdict");
  const output = $("#output");
  const outputWrap = $("#output-wrap");
  const gutter = $("#gutter");
  const strip = $("#strip");
  const legend = $("#legend");
  const tableBody = $("#entity-table tbody");
  const tableEmpty = $("#table-empty");
  const copyButton = $("#copy-json");
  const copyStatus = $("#copy-status");

  const state = {
    entityTypes: [...KNOWN_LABELS],
    hidden: new Set(),
    models: { ner: null, sentiment: null },
    run: null, // the analysis in progress or last shown (see newRun)
    controller: null,
    renderQueued: false,
    lastRenderAt: 0,
    renderCostMs: 0,
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "style") {
        // Through CSSOM, property by property: the Content-Security-Policy (style-src 'self')
        // refuses style attributes, but not styles set from the page's own script.
        for (const declaration of String(value).split(";")) {
          const colon = declaration.indexOf(":");
          if (colon > 0) node.style.setProperty(declaration.slice(0, colon).trim(), declaration.slice(colon + 1).trim());
        }
      }
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const codePoints = (text) => Array.from(text);
  const percent = (value) => `${(value * 100).toFixed(1)}%`;
  const formatMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);

  function labelColour(label) {
    if (KNOWN_LABELS.includes(label)) return null; // styled in CSS
    const index = Math.max(0, state.entityTypes.indexOf(label) - KNOWN_LABELS.length);
    return EXTRA_COLOURS[index % EXTRA_COLOURS.length];
  }

  function labelStyle(label) {
    const colour = labelColour(label);
    return colour ? `--c:${colour}` : null;
  }

  function setState(name) {
    app.dataset.state = name;
    const busy = name === "loading" || name === "streaming";
    app.setAttribute("aria-busy", String(busy));
    analyzeButton.classList.toggle("busy", busy);
    analyzeButton.querySelector(".label").innerHTML = busy
      ? '停止 <span lang="en">Stop</span>'
      : '分析 <span lang="en">Analyze</span>';
  }

  function showError(message, code, status) {
    let head = status ? `请求失败 Request failed (${status}${code ? ` · ${code}` : ""})` : "出错了 Error";
    if (!status && code === "empty_text") head = "输入为空 Empty input";
    if (!status && code === "network") head = "无法连接 Connection failed";
    if (status === 200) head = `分析中断 Analysis failed (${code})`; // an error line inside a stream
    errorBox.replaceChildren(el("strong", { text: `⚠ ${head}` }), el("span", { text: message }));
    errorBox.dataset.code = code || "";
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
    delete errorBox.dataset.code;
    input.removeAttribute("aria-invalid");
  }

  /** The API's own message from an error response, or a description of what came back. */
  // ------------------------------------------------------------------ API key
  // A zhserve with an API key answers /v1/* with 401. The page then asks for the key and keeps
  // it in sessionStorage only: this tab, until it closes; never localStorage or a cookie.

  const KEY_STORAGE = "zhserve.apiKey";

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE);
    } catch (_) {
      return null;
    }
  }

  function askForKey(rejected) {
    const dialog = $("#key-dialog");
    const form = $("#key-form");
    const input = $("#key-input");
    $("#key-reason").textContent = rejected
      ? "密钥无效，请重新输入。The key was not accepted; enter it again."
      : "此服务需要 API 密钥。This zhserve asks for an API key.";
    input.value = "";
    return new Promise((resolve) => {
      const finish = (key) => {
        form.removeEventListener("submit", onSubmit);
        $("#key-cancel").removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        resolve(key);
      };
      const onSubmit = (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (key) finish(key);
      };
      const onCancel = (event) => {
        event.preventDefault();
        finish(null);
      };
      form.addEventListener("submit", onSubmit);
      $("#key-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
      input.focus();
    });
  }

  // fetch() with the stored key; on a 401 it asks for the key and tries again (until cancelled).
  async function apiFetch(path, init = {}) {
    for (;;) {
      const key = storedKey();
      const headers = { ...(init.headers || {}) };
      if (key) headers.Authorization = `Bearer ${key}`;
      const response = await fetch(path, { ...init, headers });
      if (response.status !== 401) return response;
      const entered = await askForKey(Boolean(key));
      if (entered === null) return response;
      try {
        sessionStorage.setItem(KEY_STORAGE, entered);
      } catch (_) {
        return response; // storage refused (private mode): nothing to retry with
      }
    }
  }

  async function errorFromResponse(response) {
    let code = "";
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || "";
        message = body.error.message || message;
      } else if (body && body.detail) {
        message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (_) {
      // not JSON: keep the status line
    }
    return { code, message, status: response.status };
  }

  // ------------------------------------------------------------------ run state

  function newRun(text, streaming) {
    return {
      text,
      cps: codePoints(text),
      streaming,
      entities: [],
      sentences: [],
      covered: [], // [start, end] ranges whose NER windows have finished (streaming only)
      done: 0,
      total: 0,
      result: null, // the final /v1/analyze-shaped object
      startedAt: performance.now(),
      roundTripMs: null,
    };
  }

  /** Adds window entities, keeping one per place: the overlap of two windows reports some twice. */
  function addEntities(run, entities) {
    for (const entity of entities) {
      const clash = run.entities.findIndex((e) => e.start < entity.end && entity.start < e.end);
      if (clash === -1) run.entities.push(entity);
      else if (entity.end - entity.start > run.entities[clash].end - run.entities[clash].start) {
        run.entities[clash] = entity;
      }
    }
    run.entities.sort((a, b) => a.start - b.start);
  }

  function addSentences(run, sentences) {
    run.sentences.push(...sentences);
    run.sentences.sort((a, b) => a.start - b.start);
  }

  /** Length-weighted mean of the sentence probabilities, as the server aggregates them. */
  function provisionalSentiment(run) {
    let weight = 0;
    let positive = 0;
    for (const s of run.sentences) {
      const length = Math.max(1, s.end - s.start);
      const p = s.label === "positive" ? s.score : 1 - s.score;
      positive += p * length;
      weight += length;
    }
    if (!weight) return null;
    const pos = positive / weight;
    return {
      label: pos >= 0.5 ? "positive" : "negative",
      score: pos >= 0.5 ? pos : 1 - pos,
      scores: { positive: pos, negative: 1 - pos },
    };
  }

  // ------------------------------------------------------------------ rendering: text

  /**
   * Progressive renders while streaming, spaced by several times the cost of the last one so a
   * very long document does not spend its time redrawing instead of reading the stream.
   */
  function scheduleRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    const interval = Math.min(1500, Math.max(60, state.renderCostMs * 4));
    const wait = Math.max(0, state.lastRenderAt + interval - performance.now());
    window.setTimeout(() => {
      requestAnimationFrame(() => {
        state.renderQueued = false;
        renderAll();
      });
    }, wait);
  }

  function renderAll() {
    const run = state.run;
    if (!run) return;
    const started = performance.now();
    renderOutput(run);
    renderTable(run);
    renderLegend(run);
    renderStrip(run);
    const sentiment = run.result ? run.result.sentiment : run.streaming ? provisionalSentiment(run) : null;
    renderVerdict(sentiment, { provisional: !run.result });
    layoutGutter();
    state.lastRenderAt = performance.now();
    state.renderCostMs = state.lastRenderAt - started;
  }

  /** Non-overlapping entities in order (the final API result never overlaps; this is a guard). */
  function placeableEntities(run) {
    const placed = [];
    let end = 0;
    for (const entity of [...run.entities].sort((a, b) => a.start - b.start || b.end - a.end)) {
      if (entity.start >= end && entity.end <= run.cps.length && entity.end > entity.start) {
        placed.push(entity);
        end = entity.end;
      }
    }
    return placed;
  }

  /**
   * Splits the text into tokens: entities (kept whole, each one <mark>) and plain runs cut at
   * sentence and streaming-coverage boundaries, so they can be grouped by sentence.
   */
  function tokenize(run) {
    const n = run.cps.length;
    const sentences = run.sentences.length > 1 ? run.sentences : [];
    // While streaming, text whose NER window has not finished yet is dimmed.
    const pendingMatters = run.streaming && !run.result;
    const cuts = new Set([0, n]);
    for (const s of sentences) cuts.add(s.start).add(s.end);
    if (pendingMatters) for (const [start, end] of run.covered) cuts.add(start).add(end);
    const sortedCuts = [...cuts].filter((c) => c >= 0 && c <= n).sort((a, b) => a - b);

    const tokens = [];
    let nextCut = 0;
    const pushPlain = (from, to) => {
      let at = from;
      while (nextCut < sortedCuts.length && sortedCuts[nextCut] <= at) nextCut += 1;
      while (nextCut < sortedCuts.length && sortedCuts[nextCut] < to) {
        tokens.push({ kind: "plain", start: at, end: sortedCuts[nextCut] });
        at = sortedCuts[nextCut];
        nextCut += 1;
      }
      if (at < to) tokens.push({ kind: "plain", start: at, end: to });
    };
    let cursor = 0;
    for (const entity of placeableEntities(run)) {
      pushPlain(cursor, entity.start);
      tokens.push({ kind: "entity", start: entity.start, end: entity.end, entity });
      cursor = entity.end;
    }
    pushPlain(cursor, n);
    // Tokens come in text order, so one forward pass finds each token's sentence and coverage.
    const covered = [...run.covered].sort((a, b) => a[0] - b[0]);
    let sentence = -1;
    let range = 0;
    let coveredUntil = -1;
    for (const token of tokens) {
      while (sentence + 1 < sentences.length && sentences[sentence + 1].start <= token.start) sentence += 1;
      while (range < covered.length && covered[range][0] <= token.start) {
        coveredUntil = Math.max(coveredUntil, covered[range][1]);
        range += 1;
      }
      token.sentence = sentence;
      token.pending = pendingMatters && token.kind === "plain" && token.start >= coveredUntil;
    }
    return { tokens, sentences };
  }

  function entityMark(run, entity) {
    const text = run.cps.slice(entity.start, entity.end).join("");
    const mark = el(
      "mark",
      {
        class: state.hidden.has(entity.label) ? "ent off" : "ent",
        "data-label": entity.label,
        "data-start": entity.start,
        "data-end": entity.end,
        style: labelStyle(entity.label),
        title: `${entity.label} · ${entity.start}–${entity.end} · ${percent(entity.score)}`,
      },
      text,
    );
    return mark;
  }

  function renderOutput(run) {
    const { tokens, sentences } = tokenize(run);
    const fragment = document.createDocumentFragment();
    let group = null;
    let groupIndex = null;
    for (const token of tokens) {
      let parent = fragment;
      if (sentences.length) {
        if (token.sentence !== groupIndex || !group) {
          groupIndex = token.sentence;
          const sentence = sentences[groupIndex];
          group = el("span", {
            class: "sent",
            "data-sentence": groupIndex,
            "data-tone": sentence ? sentence.label : null,
          });
          fragment.append(group);
        }
        parent = group;
      }
      if (token.kind === "entity") {
        parent.append(entityMark(run, token.entity));
      } else {
        const text = run.cps.slice(token.start, token.end).join("");
        parent.append(token.pending ? el("span", { class: "pending" }, text) : document.createTextNode(text));
      }
    }
    output.replaceChildren(fragment);
    output.classList.toggle("streaming", run.streaming && !run.result);
  }

  // ------------------------------------------------------------------ rendering: sentences

  function renderStrip(run) {
    const sentences = run.sentences;
    const bar = strip.querySelector(".strip-bar");
    if (sentences.length <= 1) {
      strip.hidden = true;
      bar.replaceChildren();
      return;
    }
    strip.hidden = false;
    const positives = sentences.filter((s) => s.label === "positive").length;
    $("#strip-caption").textContent =
      `逐句情感 Per-sentence sentiment · ${sentences.length} 句 sentences · ` +
      `😊 ${positives} 正面 positive · 😞 ${sentences.length - positives} 负面 negative`;
    const total = Math.max(1, run.cps.length);
    const children = [];
    let cursor = 0;
    for (const [index, s] of sentences.entries()) {
      if (s.start > cursor) children.push(el("span", { class: "gap", style: `flex-grow:${s.start - cursor}` }));
      children.push(
        el("span", {
          class: `seg ${s.label}`,
          style: `flex-grow:${Math.max(1, s.end - Math.max(s.start, cursor))};opacity:${0.45 + 0.55 * s.score}`,
          title: `${s.start}–${s.end} · ${s.label} ${percent(s.score)}`,
          "data-sentence": index,
          onclick: () => jumpToSentence(index),
        }),
      );
      cursor = Math.max(cursor, s.end);
    }
    if (cursor < total) children.push(el("span", { class: "gap", style: `flex-grow:${total - cursor}` }));
    // 3 px per sentence (2 px minimum + 1 px gap) would not fit: draw them edge to edge instead.
    bar.classList.toggle("dense", sentences.length * 3 > bar.clientWidth);
    bar.replaceChildren(...children);
  }

  /** Bars beside the text, one per sentence, spanning exactly the lines the sentence occupies. */
  function layoutGutter() {
    const run = state.run;
    gutter.replaceChildren();
    const spans = output.querySelectorAll(".sent");
    outputWrap.classList.toggle("with-gutter", spans.length > 0);
    if (!run || !spans.length) return;
    const origin = output.getBoundingClientRect();
    const bars = [];
    for (const span of spans) {
      const sentence = run.sentences[Number(span.dataset.sentence)];
      const box = sentence ? visibleTextBox(span) : null;
      if (!box) continue;
      const top = box.top - origin.top;
      const bottom = box.bottom - origin.top;
      bars.push(
        el("span", {
          class: `bar ${sentence.label}`,
          style: `top:${top + 2}px;height:${Math.max(4, bottom - top - 4)}px;opacity:${0.45 + 0.55 * sentence.score}`,
          title: `${sentence.label} ${percent(sentence.score)}`,
          onmouseenter: () => span.classList.add("lit"),
          onmouseleave: () => span.classList.remove("lit"),
          onclick: () => flash(span),
        }),
      );
    }
    gutter.style.height = `${output.offsetHeight}px`;
    gutter.replaceChildren(...bars);
  }

  /** The box of a sentence's characters without its surrounding blank lines. */
  function visibleTextBox(span) {
    const walker = document.createTreeWalker(span, NodeFilter.SHOW_TEXT);
    const nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    const first = nodes.find((node) => /\S/.test(node.data));
    const last = [...nodes].reverse().find((node) => /\S/.test(node.data));
    if (!first || !last) return null;
    const range = document.createRange();
    range.setStart(first, first.data.search(/\S/));
    range.setEnd(last, last.data.length - (last.data.match(/\s*$/)[0].length));
    const rects = range.getClientRects();
    if (!rects.length) return null;
    return { top: rects[0].top, bottom: rects[rects.length - 1].bottom };
  }

  function jumpToSentence(index) {
    const span = output.querySelector(`.sent[data-sentence="${index}"]`);
    if (span) flash(span);
  }

  function flash(node) {
    const reduce = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    node.scrollIntoView({ block: "center", behavior: reduce ? "auto" : "smooth" });
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
    window.setTimeout(() => node.classList.remove("flash"), 1600);
  }

  // ------------------------------------------------------------------ rendering: entities

  function renderTable(run) {
    const rows = placeableEntities(run).map((entity) => {
      const text = run.cps.slice(entity.start, entity.end).join("");
      const jump = () => {
        const mark = output.querySelector(`mark[data-start="${entity.start}"][data-end="${entity.end}"]`);
        if (mark) flash(mark);
      };
      return el(
        "tr",
        {
          class: state.hidden.has(entity.label) ? "off" : null,
          "data-label": entity.label,
          "data-start": entity.start,
          "data-end": entity.end,
          onclick: jump,
        },
        el(
          "td",
          {},
          el(
            "button",
            { type: "button", class: "jump", "aria-label": `跳到 ${text}（${entity.label}，${entity.start}–${entity.end}）` },
            text,
          ),
        ),
        el(
          "td",
          {},
          el("span", { class: "tag", "data-label": entity.label, style: labelStyle(entity.label) }, entity.label),
        ),
        el("td", { class: "num" }, `${entity.start}–${entity.end}`),
        el("td", { class: "num" }, percent(entity.score)),
      );
    });
    tableBody.replaceChildren(...rows);
    tableEmpty.hidden = rows.length > 0;
    tableEmpty.textContent = run.streaming && !run.result ? "识别中… Finding entities…" : "未发现实体 No entities found.";
  }

  function renderLegend(run) {
    const counts = {};
    for (const entity of run ? placeableEntities(run) : []) counts[entity.label] = (counts[entity.label] || 0) + 1;
    const labels = [...state.entityTypes];
    for (const label of Object.keys(counts)) if (!labels.includes(label)) labels.push(label);
    legend.replaceChildren(
      ...labels.map((label) =>
        el(
          "button",
          {
            type: "button",
            class: "legend-item",
            "data-label": label,
            style: labelStyle(label),
            "aria-pressed": String(!state.hidden.has(label)),
            title: "点击显示或隐藏 Click to show or hide",
            onclick: () => toggleLabel(label),
          },
          el("span", { class: "swatch", "aria-hidden": "true" }),
          `${label} `,
          el("span", { class: "legend-name" }, LABEL_NAMES[label] || label),
          el("span", { class: "count" }, String(counts[label] || 0)),
        ),
      ),
    );
  }

  function toggleLabel(label) {
    if (state.hidden.has(label)) state.hidden.delete(label);
    else state.hidden.add(label);
    const off = state.hidden.has(label);
    for (const node of document.querySelectorAll(`#output mark[data-label="${CSS.escape(label)}"]`)) {
      node.classList.toggle("off", off);
    }
    for (const row of tableBody.querySelectorAll(`tr[data-label="${CSS.escape(label)}"]`)) {
      row.classList.toggle("off", off);
    }
    const button = legend.querySelector(`button[data-label="${CSS.escape(label)}"]`);
    if (button) button.setAttribute("aria-pressed", String(!off));
    requestAnimationFrame(layoutGutter);
  }

  // ------------------------------------------------------------------ rendering: verdict

  function emojiFor(label, score) {
    if (label === "positive") return score >= 0.9 ? "🤩" : score >= 0.7 ? "😊" : "🙂";
    return score >= 0.9 ? "😡" : score >= 0.7 ? "😞" : "😕";
  }

  function renderVerdict(sentiment, { provisional }) {
    const emoji = verdict.querySelector(".emoji");
    const label = verdict.querySelector(".verdict-label");
    const gauge = verdict.querySelector(".gauge");
    const fill = verdict.querySelector(".gauge-fill");
    const value = verdict.querySelector(".gauge-value");
    verdict.classList.toggle("provisional", Boolean(sentiment && provisional));
    verdict.classList.remove("positive", "negative", "empty");
    if (!sentiment) {
      verdict.classList.add("empty");
      verdict.removeAttribute("data-sentiment");
      emoji.textContent = state.run && state.run.streaming ? "⏳" : "🤖";
      label.innerHTML = state.run && state.run.streaming
        ? '分析中 <span lang="en">Analysing…</span>'
        : '等待分析 <span lang="en">Awaiting text</span>';
      fill.setAttribute("stroke-dasharray", "0 100");
      value.textContent = "—";
      gauge.setAttribute("aria-valuenow", "0");
      $("#pos-score").textContent = "—";
      $("#neg-score").textContent = "—";
      verdict.style.setProperty("--pos-share", "50%");
      return;
    }
    const score = sentiment.score;
    verdict.classList.add(sentiment.label);
    // Only a final verdict carries data-sentiment: tests and scripts can wait on it.
    if (provisional) verdict.removeAttribute("data-sentiment");
    else verdict.dataset.sentiment = sentiment.label;
    emoji.textContent = emojiFor(sentiment.label, score);
    const words = sentiment.label === "positive" ? '正面 <span lang="en">Positive</span>' : '负面 <span lang="en">Negative</span>';
    label.innerHTML = provisional ? `${words} <small>暂定 provisional</small>` : words;
    fill.setAttribute("stroke-dasharray", `${(score * 100).toFixed(1)} 100`);
    value.textContent = percent(score);
    gauge.setAttribute("aria-valuenow", (score * 100).toFixed(1));
    gauge.setAttribute("aria-valuetext", `置信度 confidence ${percent(score)}`);
    $("#pos-score").textContent = percent(sentiment.scores.positive);
    $("#neg-score").textContent = percent(sentiment.scores.negative);
    verdict.style.setProperty("--pos-share", percent(sentiment.scores.positive));
  }

  function renderMeta(run) {
    const result = run.result;
    if (result) {
      const parts = [];
      if (typeof result.elapsed_ms === "number") parts.push([formatMs(result.elapsed_ms), "服务端 server"]);
      if (run.roundTripMs !== null) parts.push([formatMs(run.roundTripMs), "往返 round trip"]);
      $("#latency").replaceChildren(
        ...parts.map(([value, what]) => el("span", { class: "sub" }, value, el("small", {}, what))),
      );
      if (!parts.length) $("#latency").textContent = "—";
      if (result.ner) $("#ner-model").textContent = result.ner.model;
      if (result.sentiment) $("#sentiment-model").textContent = result.sentiment.model;
    } else {
      $("#latency").textContent = "…";
    }
  }

  function setProgress(done, total, run) {
    const fraction = total ? done / total : 0;
    progress.hidden = false;
    progressFill.style.width = `${(fraction * 100).toFixed(1)}%`;
    progressTrack.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    progressText.textContent =
      `流式分析 Streaming · 窗口 windows ${done}/${total} · ` +
      `实体 entities ${run.entities.length} · 句子 sentences ${run.sentences.length}`;
  }

  // ------------------------------------------------------------------ requests

  async function analyze() {
    const text = input.value;
    clearError();
    if (!text.trim()) {
      input.setAttribute("aria-invalid", "true");
      showError("请输入要分析的文本。Please enter some text to analyse — the input is empty.", "empty_text");
      setState("error");
      input.focus();
      return;
    }
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const streaming = codePoints(text).length > STREAM_THRESHOLD;
    const run = newRun(text, streaming);
    state.run = run;
    copyButton.disabled = true;
    copyStatus.textContent = "";
    progress.hidden = true;
    setState(streaming ? "streaming" : "loading");
    renderMeta(run);
    renderAll();
    try {
      if (streaming) await runStream(run, controller.signal);
      else await runSingle(run, controller.signal);
      if (state.run !== run) return;
      run.roundTripMs = performance.now() - run.startedAt;
      renderMeta(run);
      renderAll();
      copyButton.disabled = false;
      setState("done");
    } catch (error) {
      if (state.run !== run) return;
      if (error.name === "AbortError") {
        showError("已停止。Analysis stopped.", "aborted");
      } else if (error.api) {
        showError(error.api.message, error.api.code, error.api.status);
      } else {
        showError(`无法连接 zhserve：Could not reach zhserve (${error.message}).`, "network");
      }
      setState("error");
      renderAll();
    } finally {
      if (state.controller === controller) state.controller = null;
    }
  }

  function apiError(details) {
    const error = new Error(details.message);
    error.api = details;
    return error;
  }

  async function post(path, text, signal) {
    const response = await apiFetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json, application/x-ndjson" },
      body: JSON.stringify({ text, tasks: TASKS }),
      signal,
    });
    if (!response.ok) throw apiError(await errorFromResponse(response));
    return response;
  }

  async function runSingle(run, signal) {
    const response = await post("/v1/analyze", run.text, signal);
    const result = await response.json();
    run.result = result;
    run.entities = result.ner ? result.ner.entities : [];
    run.sentences = result.sentiment ? result.sentiment.sentences : [];
  }

  async function runStream(run, signal) {
    const response = await post("/v1/analyze/stream", run.text, signal);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finished = false;
    const handle = (line) => {
      if (!line.trim()) return;
      const event = JSON.parse(line);
      if (event.event === "start") {
        run.total = (event.windows.ner || 0) + (event.windows.sentiment || 0);
        setProgress(0, run.total, run);
      } else if (event.event === "window") {
        run.done = event.done;
        run.total = event.total;
        if (event.task === "ner") {
          addEntities(run, event.entities || []);
          run.covered.push([event.start, event.end]);
        } else {
          addSentences(run, event.sentences || []);
        }
        setProgress(run.done, run.total, run);
        scheduleRender();
      } else if (event.event === "summary") {
        const { event: _ignored, ...result } = event;
        run.result = result;
        run.entities = result.ner ? result.ner.entities : [];
        run.sentences = result.sentiment ? result.sentiment.sentences : run.sentences;
        setProgress(run.total, run.total, run);
        progressText.textContent += " · 完成 complete ✓";
        finished = true;
      } else if (event.event === "error") {
        finished = true;
        throw apiError({ ...event.error, status: 200 });
      }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) !== -1) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        handle(line);
      }
    }
    buffer += decoder.decode();
    handle(buffer);
    if (!finished) throw apiError({ message: "数据流意外中断 The stream ended before its summary.", code: "stream_incomplete" });
  }

  async function loadModels() {
    const status = $("#service-status");
    try {
      const response = await apiFetch("/v1/models", { headers: { Accept: "application/json" } });
      if (!response.ok) throw apiError(await errorFromResponse(response));
      const { models } = await response.json();
      for (const model of models) {
        if (model.task === "ner") {
          state.models.ner = model.model;
          if (model.entity_types && model.entity_types.length) state.entityTypes = [...model.entity_types];
          $("#ner-model").textContent = model.model;
        } else if (model.task === "sentiment") {
          state.models.sentiment = model.model;
          $("#sentiment-model").textContent = model.model;
        }
      }
      status.dataset.status = "online";
      status.querySelector(".status-text").textContent = "在线 online";
    } catch (error) {
      status.dataset.status = "offline";
      status.querySelector(".status-text").textContent = `离线 offline (${error.message})`;
    }
    renderLegend(state.run);
  }

  // ------------------------------------------------------------------ copy

  async function copyJson() {
    const run = state.run;
    if (!run || !run.result) return;
    const json = JSON.stringify(run.result, null, 2);
    try {
      await navigator.clipboard.writeText(json);
    } catch (_) {
      // Clipboard API needs a secure context; fall back to a selection copy.
      const area = el("textarea", { class: "visually-hidden", "aria-hidden": "true" });
      area.value = json;
      document.body.append(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      if (!ok) {
        copyStatus.textContent = "复制失败 Copy failed";
        return;
      }
    }
    copyStatus.textContent = `已复制 Copied ${json.length.toLocaleString()} chars of JSON ✓`;
    window.setTimeout(() => (copyStatus.textContent = ""), 3000);
  }

  // ------------------------------------------------------------------ wiring

  function updateCount() {
    const n = codePoints(input.value).length;
    $("#char-count").textContent = n.toLocaleString();
    $("#mode-hint").textContent = n > STREAM_THRESHOLD ? "流式模式 streaming" : "标准模式 single request";
  }

  analyzeButton.addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    else analyze();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      analyze();
    }
  });
  input.addEventListener("input", () => {
    updateCount();
    if (input.getAttribute("aria-invalid") && input.value.trim()) clearError();
  });
  $("#clear").addEventListener("click", () => {
    input.value = "";
    updateCount();
    input.focus();
  });
  for (const button of document.querySelectorAll("[data-example]")) {
    button.addEventListener("click", () => {
      input.value = window.ZHSERVE_EXAMPLES[button.dataset.example];
      updateCount();
      clearError();
      input.focus();
      input.setSelectionRange(0, 0);
      input.scrollTop = 0;
    });
  }
  copyButton.addEventListener("click", copyJson);
  if ("ResizeObserver" in window) new ResizeObserver(() => layoutGutter()).observe(output);

  updateCount();
  renderLegend(null);
  loadModels();
})();
