// The binary serves every file under static/ (src/web/assets.rs embeds the directory): the page's
// tool configs (ESLint, tsc) and dev dependencies live in tests/browser/, and must stay out of it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const STATIC = fileURLToPath(new URL('../../../static/', import.meta.url));

test('static/ holds the page only: no tool configs, lockfiles or node_modules to serve', () => {
  const files = readdirSync(STATIC, { recursive: true }).map(String);
  assert.ok(files.includes('app.js') && files.includes('index.html'), files.join(' '));
  const tooling = /(^|\/)(node_modules|tsconfig[^/]*\.json|jsconfig[^/]*\.json|eslint\.config\.[cm]?js|\.eslintrc[^/]*|package(-lock)?\.json)$/;
  assert.deepEqual(files.filter((f) => tooling.test(f.replaceAll('\\', '/'))), []);
});
