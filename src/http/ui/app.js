// flowgate /ui: draws every running pipeline's graph from /api/pipelines
// (positions come laid out from the daemon) and refreshes the figures every
// second; rates are the difference of two reads. Selecting a component
// streams a sample of its output from /tap. Same origin only.
'use strict';

const NS = 'http://www.w3.org/2000/svg';
const PAD = 24;
const TAP_LINES = 60;

let shape = null; // the graphs last drawn, as JSON: a change redraws
let last = null; // the previous read, for rates
let selected = null; // {pipeline, component, output}
let tap = null; // AbortController of the open tap stream
let tapLines = [];

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function text(parent, x, y, cls, content) {
  const t = el('text', { x, y, class: cls }, parent);
  t.textContent = content || '';
  return t;
}

function short(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + 'G';
  if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  if (n >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

function whole(n) {
  return Number(n).toLocaleString('en-US');
}

function setStatus(cls, words) {
  const s = document.getElementById('status');
  s.className = 'status ' + cls;
  s.textContent = words;
}

function draw(api) {
  const root = document.getElementById('pipelines');
  root.replaceChildren();
  if (api.pipelines.length === 0) {
    const p = document.createElement('p');
    p.textContent = 'No pipeline is running.';
    root.appendChild(p);
  }
  for (const p of api.pipelines) {
    const g = p.graph;
    const section = document.createElement('section');
    section.className = 'pipeline';
    section.dataset.pipeline = p.name;
    const h = document.createElement('h2');
    h.textContent = p.name;
    const file = document.createElement('small');
    file.textContent = p.file;
    h.appendChild(file);
    section.appendChild(h);
    const w = g.width + 2 * PAD;
    const hgt = g.height + 2 * PAD;
    // Scales down to the width left beside the detail panel, never up.
    const svg = el('svg', { class: 'graph', viewBox: `0 0 ${w} ${hgt}` });
    svg.style.maxWidth = `${w}px`;
    const defs = el('defs', {}, svg);
    const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, defs);
    el('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#8a93a6' }, marker);
    const at = {};
    for (const c of g.components) at[c.name] = c;
    const edges = el('g', {}, svg);
    for (const e of g.edges) {
      const a = at[e.from];
      const b = at[e.to];
      const x1 = PAD + a.x + g.node_width;
      const y1 = PAD + a.y + g.node_height / 2;
      const x2 = PAD + b.x;
      const y2 = PAD + b.y + g.node_height / 2;
      const mx = (x1 + x2) / 2;
      el('path', { class: 'edge', d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`, 'marker-end': 'url(#arrow)', 'data-from': e.from, 'data-to': e.to }, edges);
      if (e.port) {
        const label = text(edges, x1 + 8, y1 + (y2 >= y1 ? 14 : -6), 'edge-label', e.port);
        label.dataset.port = e.port;
      }
    }
    for (const c of g.components) drawNode(svg, p.name, c, g);
    section.appendChild(svg);
    root.appendChild(section);
  }
}

function drawNode(svg, pipeline, c, g) {
  const n = el('g', { class: `node ${c.kind}`, transform: `translate(${PAD + c.x},${PAD + c.y})` }, svg);
  n.dataset.pipeline = pipeline;
  n.dataset.component = c.name;
  n.addEventListener('click', () => select(pipeline, c.name));
  const W = g.node_width;
  el('rect', { class: 'box', width: W, height: g.node_height, rx: 7 }, n);
  text(n, 10, 20, 'name', c.name);
  let type = `${c.type} · ${c.kind}`;
  if (c.workers && c.workers !== '1') type += ` · ${c.workers} workers`;
  text(n, 10, 36, 'type', type);
  text(n, 10, 56, 'rates', '');
  text(n, 10, 74, 'load', '');
  if (c.buffer_size !== null) {
    el('rect', { class: 'bar-bg', x: 10, y: 83, width: 110, height: 9, rx: 2 }, n);
    el('rect', { class: 'bar', x: 10, y: 83, width: 0, height: 9, rx: 2 }, n);
  }
  text(n, c.buffer_size !== null ? 128 : 10, 92, 'buffer', c.buffer_size !== null ? '' : 'no input buffer');
  text(n, 10, 110, 'totals', '');
  if (c.breaker) {
    const b = el('g', { class: 'breaker', transform: `translate(${W - 78},8)` }, n);
    el('rect', { width: 70, height: 16, rx: 8 }, b);
    text(b, 35, 12, '', '').setAttribute('text-anchor', 'middle');
  }
  if (selected && selected.pipeline === pipeline && selected.component === c.name) n.classList.add('selected');
}

function rate(now, before, dt) {
  if (before === undefined || dt <= 0) return '…';
  return short(Math.max(0, now - before) / dt) + '/s';
}

function update(api, prev) {
  const dt = prev ? (api.time_ms - prev.time_ms) / 1000 : 0;
  for (const p of api.pipelines) {
    const old = prev ? prev.pipelines.find((q) => q.name === p.name) : undefined;
    for (const c of p.graph.components) {
      const f = p.figures[c.name];
      const b = (old && old.figures[c.name]) || undefined;
      const n = document.querySelector(`g.node[data-pipeline="${CSS.escape(p.name)}"][data-component="${CSS.escape(c.name)}"]`);
      if (!n || !f) continue;
      n.dataset.eventsIn = f.events_in;
      n.dataset.eventsOut = f.events_out;
      n.dataset.errors = f.errors;
      const inRate = c.kind === 'source' ? '' : `in ${rate(f.events_in, b && b.events_in, dt)} · `;
      n.querySelector('text.rates').textContent = `${inRate}out ${rate(f.events_out, b && b.events_out, dt)}`;
      let load = `errors ${rate(f.errors, b && b.errors, dt)}`;
      if (c.kind !== 'source') {
        const most = f.workers_limit !== null ? f.workers_limit : c.workers === 'adaptive' ? '?' : c.workers;
        load += ` · busy ${f.workers_busy}/${most}`;
      }
      n.querySelector('text.load').textContent = load;
      n.classList.toggle('failing', b !== undefined && f.errors > b.errors);
      const bar = n.querySelector('rect.bar');
      if (bar) {
        const cap = f.buffer_capacity || c.buffer_size || 1;
        const fill = Math.min(1, f.buffer_events / cap);
        bar.setAttribute('width', Math.round(110 * fill));
        bar.classList.toggle('warn', fill >= 0.5 && fill < 0.9);
        bar.classList.toggle('full', fill >= 0.9);
        n.querySelector('text.buffer').textContent = `${whole(f.buffer_events)}/${whole(cap)}`;
      }
      n.querySelector('text.totals').textContent = c.kind === 'source' ? `${whole(f.events_out)} out` : `${whole(f.events_in)} in · ${whole(f.events_out)} out`;
      const br = n.querySelector('g.breaker');
      if (br) {
        const state = f.breaker || 'closed';
        br.setAttribute('class', `breaker ${state}`);
        br.querySelector('text').textContent = state.replace('_', '-');
      }
    }
  }
  if (selected) showFigures(api);
}

function showFigures(api) {
  const p = api.pipelines.find((q) => q.name === selected.pipeline);
  const f = p && p.figures[selected.component];
  const table = document.getElementById('detail-figures');
  table.replaceChildren();
  if (!f) return;
  const rows = [
    ['events in', whole(f.events_in)],
    ['events out', whole(f.events_out)],
    ...Object.entries(f.outputs).map(([o, v]) => [`  output ${o}`, whole(v)]),
    ['errors', whole(f.errors)],
    ['discarded', whole(f.discarded)],
    ['retries', whole(f.retries)],
    ['buffer', `${whole(f.buffer_events)} / ${whole(f.buffer_capacity)}`],
    ['workers busy', f.workers_busy],
  ];
  if (f.breaker) rows.push(['breaker', f.breaker]);
  for (const [k, v] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
}

function select(pipeline, component) {
  document.querySelectorAll('g.node.selected').forEach((n) => n.classList.remove('selected'));
  const api = last;
  const p = api && api.pipelines.find((q) => q.name === pipeline);
  const c = p && p.graph.components.find((q) => q.name === component);
  if (!c) return;
  selected = { pipeline, component, output: c.outputs[0] || null };
  const node = document.querySelector(`g.node[data-pipeline="${CSS.escape(pipeline)}"][data-component="${CSS.escape(component)}"]`);
  if (node) node.classList.add('selected');
  document.getElementById('detail').hidden = false;
  document.getElementById('detail-name').textContent = `${pipeline} / ${component}`;
  const outs = document.getElementById('detail-outputs');
  outs.replaceChildren();
  for (const o of c.outputs) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = o;
    b.addEventListener('click', () => {
      selected.output = o;
      startTap();
    });
    outs.appendChild(b);
  }
  showFigures(api);
  startTap();
}

function closeDetail() {
  if (tap) tap.abort();
  tap = null;
  selected = null;
  document.querySelectorAll('g.node.selected').forEach((n) => n.classList.remove('selected'));
  document.getElementById('detail').hidden = true;
}

async function startTap() {
  if (tap) tap.abort();
  tap = null;
  tapLines = [];
  const pre = document.getElementById('detail-tap');
  for (const b of document.querySelectorAll('#detail-outputs button')) b.classList.toggle('on', b.textContent === selected.output);
  if (!selected.output) {
    pre.textContent = 'A sink has no output to sample.';
    return;
  }
  pre.textContent = `waiting for events leaving ${selected.output}…`;
  const mine = new AbortController();
  tap = mine;
  try {
    const url = '/tap/' + [selected.pipeline, selected.output].map(encodeURIComponent).join('/');
    const r = await fetch(url, { signal: mine.signal, cache: 'no-store' });
    if (!r.ok) {
      pre.textContent = await r.text();
      return;
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let pending = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      const lines = pending.split('\n');
      pending = lines.pop();
      tapLines.push(...lines);
      if (tapLines.length > TAP_LINES) tapLines = tapLines.slice(-TAP_LINES);
      pre.textContent = tapLines.join('\n');
      pre.scrollTop = pre.scrollHeight;
    }
    if (tap === mine) pre.textContent += '\n(the output has closed)';
  } catch (e) {
    if (!mine.signal.aborted) pre.textContent = `tap stopped: ${e}`;
  }
}

async function refresh() {
  let api;
  try {
    const r = await fetch('/api/pipelines', { cache: 'no-store' });
    api = await r.json();
  } catch (e) {
    setStatus('down', 'daemon unreachable');
    return;
  }
  setStatus('live', 'live');
  const s = JSON.stringify(api.pipelines.map((p) => [p.name, p.file, p.graph]));
  if (s !== shape) {
    draw(api);
    shape = s;
    if (selected && !api.pipelines.some((p) => p.name === selected.pipeline && p.figures[selected.component])) closeDetail();
  }
  update(api, last);
  last = api;
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
}

document.getElementById('detail-close').addEventListener('click', closeDetail);
refresh();
setInterval(refresh, 1000);
