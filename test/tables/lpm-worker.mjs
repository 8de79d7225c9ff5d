// Wraps a posted LPM table buffer and answers the posted queries.
import { parentPort, workerData } from 'node:worker_threads';

const { moduleUrl, kind, buffer, queries } = workerData;
const mod = await import(moduleUrl);
const out = new Int32Array(kind === 4 ? queries.length : queries.length / 4);
if (kind === 4) {
  const t = new mod.Lpm4Table(buffer);
  for (let i = 0; i < queries.length; i++) out[i] = t.lookup(queries[i]);
} else {
  const t = new mod.Lpm6Table(buffer);
  for (let i = 0; i < out.length; i++) out[i] = t.lookup(queries[4 * i], queries[4 * i + 1], queries[4 * i + 2], queries[4 * i + 3]);
}
parentPort.postMessage(out);
