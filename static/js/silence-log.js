// What changed in the silence set, for the live log. A `silences` frame carries the whole set
// after a change (created, edited, deleted, started, ended), so the change is the difference
// between the set before and after. Pure: no DOM; `now` is passed in.

const FIELDS = ['query', 'comment', 'starts_at', 'ends_at', 'by'];

/** How late (ms) a silence may go past its end and still count as having ended by itself: the
 *  server ends silences on its reaper's tick, and its clock and this page's may differ. */
export const ENDED_SLACK_MS = 60_000;

/** @param {Record<string, any>} s */
const quoted = (s) => (s.comment ? ` — ${s.comment}` : '');

/**
 * The live log's sentences for the change from silence list `before` to `after` (SILENCE
 * objects of the wire contract), oldest first by id. `by` names who deleted, when the frame
 * says (today's frames do not: a deletion then has no name). `change` is a `silence` delta
 * frame's own kind ('deleted', 'ended', …): when given, it says whether a silence that is gone
 * was deleted or ended by itself, instead of guessing from its end time.
 * @param {Record<string, any>[]} before
 * @param {Record<string, any>[]} after
 * @param {{ now?: number, by?: unknown, change?: unknown }} [context]
 */
export function silenceNotes(before, after, { now, by, change } = {}) {
  const old = new Map(before.map((s) => [String(s.id), s]));
  const notes = [];
  for (const s of after) {
    const was = old.get(String(s.id));
    old.delete(String(s.id));
    if (!was) notes.push(`Silence created by ${s.by || 'someone'}: ${s.query}${quoted(s)}`);
    else if (FIELDS.some((f) => was[f] !== s[f])) notes.push(`Silence edited by ${s.by || 'someone'}: ${s.query}${quoted(s)}`);
    else if (!was.active && s.active) notes.push(`Silence started: ${s.query}`);
  }
  for (const s of old.values()) {
    const end = Date.parse(s.ends_at);
    const ended =
      change === 'ended' ||
      (change !== 'deleted' && Number.isFinite(end) && end <= /** @type {number} */ (now) + ENDED_SLACK_MS && !(typeof by === 'string' && by));
    notes.push(ended ? `Silence ended: ${s.query}` : `Silence deleted${typeof by === 'string' && by ? ` by ${by}` : ''}: ${s.query}`);
  }
  return notes;
}
