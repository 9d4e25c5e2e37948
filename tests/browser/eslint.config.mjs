// ESLint (flat config) for the page's code (static/, plain ES modules for the browser) and for its
// unit tests (tests/browser/model/) and benchmark (bench/*.mjs), Node. Run from the repository's
// root, as `npm run check` in tests/browser (and so scripts/test) does:
//   tests/browser/node_modules/.bin/eslint -c tests/browser/eslint.config.mjs static tests/browser/model
// It lives here, beside the dev dependencies it imports, not in static/ (which the binary serves).

import js from '@eslint/js';
import globals from 'globals';

export default [
  {
    // static/vendor/ holds third-party code as released (uPlot), kept byte for byte.
    ignores: ['tests/browser/node_modules/**', 'tests/browser/screenshots/**', 'target/**', 'static/vendor/**'],
  },
  js.configs.recommended,
  {
    // Rules beyond "recommended" that catch real bugs in this code: loose equality between a
    // frame's field and a literal (`== null`, "null or undefined", is the one loose comparison
    // meant), shadowed names in long closures, unused values.
    rules: {
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-unused-vars': ['error', { args: 'after-used', caughtErrors: 'all', ignoreRestSiblings: true }],
      'no-shadow': 'error',
      'no-use-before-define': ['error', { functions: false, classes: true, variables: false }],
      'no-implicit-globals': 'error',
      'no-var': 'error',
      'prefer-const': 'error',
      'no-throw-literal': 'error',
      'no-promise-executor-return': 'error',
      'no-self-compare': 'error',
      'no-template-curly-in-string': 'error',
      'no-unmodified-loop-condition': 'error',
      'no-unreachable-loop': 'error',
      'array-callback-return': 'error',
      'no-constructor-return': 'error',
      'default-case-last': 'error',
      'no-new-wrappers': 'error',
      'no-proto': 'error',
      'no-eval': 'error',
      'no-implied-eval': 'error',
    },
  },
  {
    files: ['static/**/*.js'],
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { ...globals.browser } },
  },
  {
    files: ['tests/browser/**/*.mjs', 'bench/**/*.mjs'],
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: 'module',
      // page.evaluate() callbacks run in the browser.
      globals: { ...globals.node, ...globals.browser },
    },
  },
];
