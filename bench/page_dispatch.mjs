// What the page's pure protocol step (static/js/dispatch.js) costs per change frame, against the
// Model work the old handler did inline (applyChange + status), measured in the same run,
// alternating, on the same frames. The DOM work that follows either is the same and not measured.
//
//   node bench/page_dispatch.mjs [services=10000] [frames=200000] [rounds=7]

import { Model } from '../static/js/model.js';
import { dispatch, initialState } from '../static/js/dispatch.js';

const [services = 10_000, frames = 200_000, rounds = 7] = process.argv.slice(2).map(Number);
const NOW = Date.parse('2026-12-07T12:00:00Z');
const STATES = ['ok', 'warning', 'critical'];

const events = Array.from({ length: services }, (_, i) => ({ host: `h${i % 500}`, service: `s${i}`, state: 'ok', time: NOW / 1000 }));
const changes = Array.from({ length: frames }, (_, i) => ({
  type: 'change', seq: 1 + i, event: { ...events[(i * 7919) % services], state: STATES[i % 3] },
}));

function fresh() {
  const model = new Model();
  model.applySnapshot({ type: 'snapshot', seq: 0, events }, NOW);
  return model;
}

/** The old handler's Model work per change frame. */
function inline() {
  const model = fresh();
  const t0 = process.hrtime.bigint();
  let sink = 0;
  for (const frame of changes) {
    const result = model.applyChange(frame, NOW);
    if (result && !result.removed) sink += model.status(result.key).length;
  }
  return [Number(process.hrtime.bigint() - t0) / 1e6, sink];
}

/** The same frames through dispatch (which does that Model work and builds the effects). */
function stepped() {
  const model = fresh();
  let state = { ...initialState(''), snapshot: true, live: true };
  const t0 = process.hrtime.bigint();
  let sink = 0;
  for (const frame of changes) {
    const step = dispatch(state, frame, { model, now: NOW });
    state = step.state;
    sink += step.effects.length;
  }
  return [Number(process.hrtime.bigint() - t0) / 1e6, sink];
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
inline(); stepped(); // warm-up (JIT)
const a = [];
const b = [];
for (let r = 0; r < rounds; r += 1) {
  a.push(inline()[0]);
  b.push(stepped()[0]);
}
const ma = median(a);
const mb = median(b);
console.log(`services=${services} frames=${frames} rounds=${rounds}`);
console.log(`model only (old handler's work): median ${ma.toFixed(1)} ms = ${(ma * 1e6 / frames).toFixed(0)} ns/frame`);
console.log(`dispatch (model + effects):      median ${mb.toFixed(1)} ms = ${(mb * 1e6 / frames).toFixed(0)} ns/frame`);
console.log(`ratio dispatch / model only: ${(mb / ma).toFixed(2)}`);
