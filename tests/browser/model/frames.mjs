// Frames as the server sends them, built from readable values, for the page's model tests.

/**
 * A `metrics` frame in the server's compact shape (see metricValues in model.js), from values
 * written as objects {host, service, metric, description, time}.
 * @param {number} time
 * @param {Record<string, any>[]} values
 */
export function metricsFrame(time, values) {
  /** @type {string[]} */
  const hosts = [];
  const row = (/** @type {Record<string, any>} */ v) => {
    let h = v.host == null ? null : hosts.indexOf(v.host);
    if (h === -1) h = hosts.push(v.host) - 1;
    const age = typeof v.time === 'string' ? time - Date.parse(v.time) : null;
    return [h, v.service ?? null, v.metric ?? null, v.description ?? null, age];
  };
  return { type: 'metrics', time, hosts, values: values.map(row) };
}
