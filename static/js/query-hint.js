// A hint for a filter that is valid Riemann but rarely what was meant: `state = critical`
// compares the field state with a field named critical (always false), where `state =
// "critical"` compares it with the text. Pure, so `node --test` checks it.

const FIELDS = ['host', 'service', 'state', 'description', 'metric', 'metric_f', 'ttl', 'time'];
const KEYWORDS = new Set(['nil', 'null', 'true', 'false', 'and', 'or', 'not', 'tagged']);

/**
 * The hint for query `q`, or '' when nothing looks off.
 * @param {string} q
 */
export function queryHint(q) {
  const s = String(q ?? '');
  // Skip quoted strings so `description = "state = ok"` is not flagged.
  const unquoted = s.replace(/"(?:[^"\\]|\\.)*"/g, (m) => ' '.repeat(m.length));
  const re = /\b([A-Za-z_][\w]*)\s*(=|!=|=~)\s*([A-Za-z_][\w-]*)/g;
  let m;
  while ((m = re.exec(unquoted)) !== null) {
    const [, field, op, word] = m;
    if (KEYWORDS.has(word.toLowerCase())) continue;
    if (FIELDS.includes(word)) continue; // `host = service` may well mean two fields
    return `Hint: ${field} ${op} ${word} compares the field ${field} with a field named ${word}; `
      + `for the text, quote it: ${field} ${op} "${word}"`;
  }
  return '';
}
