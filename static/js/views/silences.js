// Silences: the list the server sent (frames "silences" and the snapshot), a form to create one
// (a Riemann query and a duration) or edit one, and delete. Changes come back as frames.

import { $, el, setText, timeEl } from '../dom.js';
import { parseTime } from '../model.js';
import { rememberedBy } from '../actions.js';

/**
 * @param {object} deps
 * @param {import('../model.js').Model} deps.model
 * @param {ReturnType<typeof import('../actions.js').createActions>} deps.actions
 */
export function createSilences({ model, actions }) {
  const list = $('silence-rows');
  const form = /** @type {HTMLFormElement} */ ($('silence-form'));
  const query = /** @type {HTMLInputElement} */ ($('silence-query'));
  const comment = /** @type {HTMLInputElement} */ ($('silence-comment'));
  const duration = /** @type {HTMLInputElement} */ ($('silence-duration'));
  const by = /** @type {HTMLInputElement} */ ($('silence-by'));
  const message = $('silence-message');
  const submit = $('silence-submit');
  const cancel = $('silence-cancel');
  /** @type {string | null} */
  let editing = null; // id being edited

  by.value = rememberedBy();

  /**
   * @param {string} text
   * @param {string} [kind]
   */
  function say(text, kind = 'info') {
    setText(message, text);
    message.hidden = text === '';
    message.dataset.kind = kind;
  }

  function reset() {
    editing = null;
    form.reset();
    by.value = rememberedBy();
    duration.value = '2h';
    setText(submit, 'Silence');
    cancel.hidden = true;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!by.value.trim()) by.value = rememberedBy(); // typed meanwhile in the details
    const body = { query: query.value.trim(), comment: comment.value.trim(), by: by.value.trim(), duration: duration.value.trim() };
    if (!body.query) {
      say('A silence needs a query, e.g. host =~ "db%"', 'error');
      return;
    }
    if (!body.by) {
      say('Type your name first (it is remembered).', 'error');
      by.focus();
      return;
    }
    say('Sending…');
    const answer = editing === null ? await actions.createSilence(body) : await actions.editSilence(editing, body);
    if (answer.ok) {
      say('');
      reset();
    } else say(`Refused: ${answer.error}`, 'error');
  });
  cancel.addEventListener('click', () => { reset(); say(''); });

  list.addEventListener('click', async (e) => {
    const target = /** @type {Element} */ (e.target);
    const button = target.closest('button');
    const tr = target.closest('tr');
    if (!button || !tr) return;
    const silence = model.silences.find((/** @type {Record<string, any>} */ s) => String(s.id) === tr.dataset.id);
    if (!silence) return;
    if (button.dataset.action === 'edit') {
      editing = String(silence.id);
      query.value = silence.query ?? '';
      comment.value = silence.comment ?? '';
      const ends = parseTime(silence.ends_at);
      if (ends !== null) {
        const minutes = Math.max(1, Math.round((ends - Date.now()) / 60_000));
        duration.value = minutes % 60 === 0 ? `${minutes / 60}h` : `${minutes}m`;
      }
      if (!by.value.trim()) by.value = rememberedBy();
      setText(submit, 'Save');
      cancel.hidden = false;
      query.focus();
    } else if (button.dataset.action === 'delete') {
      say('Sending…');
      const name = by.value.trim() || rememberedBy();
      if (!name) {
        say('Type your name first (it is remembered).', 'error');
        by.focus();
        return;
      }
      const answer = await actions.deleteSilence(silence.id, name);
      say(answer.ok ? '' : `Refused: ${answer.error}`, answer.ok ? 'info' : 'error');
    }
  });

  function render() {
    const rows = model.silences.map((/** @type {Record<string, any>} */ s) => {
      const tr = el('tr', s.active ? 'silence active' : 'silence');
      tr.dataset.id = String(s.id);
      const q = el('td', 'c-query');
      q.append(el('code', null, s.query ?? ''));
      const c = el('td', 'c-comment', s.comment ?? '');
      const who = el('td', 'c-by', s.by ?? '');
      const when = el('td', 'c-when');
      const start = parseTime(s.starts_at);
      const end = parseTime(s.ends_at);
      if (start !== null) when.append(timeEl('silence-start', start, 'short'));
      when.append(' → ');
      if (end !== null) when.append(timeEl('silence-end', end, 'short'));
      const st = el('td', 'c-active', s.active ? 'active' : 'pending');
      const act = el('td', 'c-silence-act');
      const edit = el('button', 'row-action', 'edit');
      edit.type = 'button';
      edit.dataset.action = 'edit';
      const del = el('button', 'row-action danger', 'delete');
      del.type = 'button';
      del.dataset.action = 'delete';
      act.append(edit, del);
      tr.append(q, c, who, when, st, act);
      return tr;
    });
    list.replaceChildren(...rows);
    $('silences-empty').hidden = rows.length > 0;
    setText($('tab-silences'), model.silences.length ? `Silences (${model.silences.length})` : 'Silences');
  }

  reset();
  return { render };
}
