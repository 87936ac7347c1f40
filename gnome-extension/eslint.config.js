// SPDX-License-Identifier: MIT
//
// ESLint for the extension and its gjs tests, in GNOME Shell's coding style: the rule set of
// GNOME Shell 48's lint/eslintrc-gjs.yml and lint/eslintrc-shell.yml, as a flat config.
// GNOME's own shareable config (eslint-config-gnome) is not on the npm registry, so the rules
// are stated here; the layout rules that ESLint 9 deprecated come from @stylistic under the
// same names and options.
//
//   cd gnome-extension && npm ci && npx eslint      (tests/test_extension_lint.py runs this)

import js from '@eslint/js';
import stylistic from '@stylistic/eslint-plugin';
import jsdoc from 'eslint-plugin-jsdoc';
import globals from 'globals';

const GJS_GLOBALS = {
    ARGV: 'readonly',
    Debugger: 'readonly',
    GIRepositoryGType: 'readonly',
    globalThis: 'readonly',
    imports: 'readonly',
    Intl: 'readonly',
    log: 'readonly',
    logError: 'readonly',
    print: 'readonly',
    printerr: 'readonly',
    TextEncoder: 'readonly',
    TextDecoder: 'readonly',
    console: 'readonly',
    setTimeout: 'readonly',
    setInterval: 'readonly',
    clearTimeout: 'readonly',
    clearInterval: 'readonly',
};

const layout = {
    '@stylistic/array-bracket-newline': ['error', 'consistent'],
    '@stylistic/array-bracket-spacing': ['error', 'never'],
    '@stylistic/arrow-parens': ['error', 'as-needed'],
    '@stylistic/arrow-spacing': 'error',
    '@stylistic/block-spacing': 'error',
    '@stylistic/brace-style': 'error',
    '@stylistic/comma-dangle': ['error', {
        arrays: 'always-multiline',
        objects: 'always-multiline',
        imports: 'always-multiline',
        exports: 'always-multiline',
        functions: 'never',
    }],
    '@stylistic/comma-spacing': ['error', {before: false, after: true}],
    '@stylistic/comma-style': ['error', 'last'],
    '@stylistic/computed-property-spacing': 'error',
    '@stylistic/dot-location': ['error', 'property'],
    '@stylistic/eol-last': 'error',
    '@stylistic/function-call-spacing': 'error',
    '@stylistic/indent': ['error', 4, {
        ignoredNodes: [
            // the body of GObject.registerClass() is not indented (a decorator to be)
            'CallExpression[callee.object.name=GObject][callee.property.name=registerClass] > ClassExpression:first-child',
        ],
        MemberExpression: 'off',
    }],
    '@stylistic/key-spacing': ['error', {mode: 'minimum', beforeColon: false, afterColon: true}],
    '@stylistic/keyword-spacing': ['error', {before: true, after: true}],
    '@stylistic/linebreak-style': ['error', 'unix'],
    '@stylistic/lines-between-class-members': ['error', 'always', {exceptAfterSingleLine: true}],
    '@stylistic/max-statements-per-line': 'error',
    '@stylistic/new-parens': 'error',
    '@stylistic/no-extra-parens': ['error', 'all', {
        conditionalAssign: false,
        nestedBinaryExpressions: false,
        returnAssign: false,
    }],
    '@stylistic/no-tabs': 'error',
    '@stylistic/no-trailing-spaces': 'error',
    '@stylistic/no-whitespace-before-property': 'error',
    '@stylistic/object-curly-newline': ['error', {consistent: true, multiline: true}],
    '@stylistic/object-curly-spacing': 'error',
    '@stylistic/operator-linebreak': 'error',
    '@stylistic/padded-blocks': ['error', 'never'],
    '@stylistic/quotes': ['error', 'single', {avoidEscape: true}],
    '@stylistic/rest-spread-spacing': 'error',
    '@stylistic/semi': ['error', 'always'],
    '@stylistic/semi-spacing': ['error', {before: false, after: true}],
    '@stylistic/semi-style': 'error',
    '@stylistic/space-before-blocks': 'error',
    '@stylistic/space-before-function-paren': ['error', {
        named: 'never',
        anonymous: 'always',
        asyncArrow: 'always',
    }],
    '@stylistic/space-in-parens': 'error',
    '@stylistic/space-infix-ops': ['error', {int32Hint: false}],
    '@stylistic/space-unary-ops': 'error',
    '@stylistic/spaced-comment': 'error',
    '@stylistic/switch-colon-spacing': 'error',
    '@stylistic/template-curly-spacing': 'error',
    '@stylistic/template-tag-spacing': 'error',
    '@stylistic/wrap-iife': ['error', 'inside'],
    '@stylistic/yield-star-spacing': 'error',
};

const logic = {
    'array-callback-return': 'error',
    'block-scoped-var': 'error',
    'camelcase': ['error', {properties: 'never', allow: ['^vfunc_', '^on_']}],
    'consistent-return': 'error',
    'curly': ['error', 'multi-or-nest', 'consistent'],
    'eqeqeq': ['error', 'smart'],
    'func-name-matching': 'error',
    'func-style': ['error', 'declaration', {allowArrowFunctions: true}],
    'max-nested-callbacks': 'error',
    'no-array-constructor': 'error',
    'no-await-in-loop': 'error',
    'no-caller': 'error',
    'no-constant-condition': ['error', {checkLoops: false}],
    'no-div-regex': 'error',
    'no-empty': ['error', {allowEmptyCatch: true}],
    'no-extra-bind': 'error',
    'no-implicit-coercion': ['error', {allow: ['!!']}],
    'no-invalid-this': 'error',
    'no-iterator': 'error',
    'no-label-var': 'error',
    'no-lonely-if': 'error',
    'no-loop-func': 'error',
    'no-nested-ternary': 'error',
    'no-object-constructor': 'error',
    'no-new-wrappers': 'error',
    'no-octal-escape': 'error',
    'no-proto': 'error',
    'no-prototype-builtins': 'off',
    'no-restricted-globals': ['error', 'window'],
    'no-restricted-syntax': ['error', {
        selector: 'MethodDefinition[key.name="_init"] > FunctionExpression[params.length=0] > ' +
            'BlockStatement[body.length=1] CallExpression[arguments.length=0][callee.object.type="Super"]' +
            '[callee.property.name="_init"]',
        message: '_init() that only calls super._init() is unnecessary',
    }, {
        selector: 'BinaryExpression[operator="instanceof"][right.name="Array"]',
        message: 'Use Array.isArray()',
    }],
    'no-return-assign': 'error',
    'no-self-compare': 'error',
    'no-shadow': 'error',
    'no-shadow-restricted-names': 'error',
    'no-template-curly-in-string': 'error',
    'no-throw-literal': 'error',
    'no-undef-init': 'error',
    'no-unneeded-ternary': 'error',
    'no-unused-expressions': 'error',
    'no-unused-vars': ['error', {
        // vars use a suffix _ instead of a prefix because of file-scope private vars
        varsIgnorePattern: '(^unused|_$)',
        argsIgnorePattern: '^(unused|_)',
        caughtErrors: 'all',
    }],
    'no-useless-call': 'error',
    'no-useless-computed-key': 'error',
    'no-useless-concat': 'error',
    'no-useless-constructor': 'error',
    'no-useless-rename': 'error',
    'no-useless-return': 'error',
    'no-with': 'error',
    'nonblock-statement-body-position': ['error', 'below'],
    'object-shorthand': 'error',
    'operator-assignment': 'error',
    'prefer-arrow-callback': 'error',
    'prefer-numeric-literals': 'error',
    'prefer-promise-reject-errors': 'error',
    'prefer-rest-params': 'error',
    'prefer-spread': 'error',
    'prefer-template': 'error',
    'require-await': 'error',
    'symbol-description': 'error',
    'unicode-bom': 'error',
    'yoda': 'error',
};

const docs = {
    'jsdoc/check-alignment': 'error',
    'jsdoc/check-param-names': 'error',
    'jsdoc/check-tag-names': 'error',
    'jsdoc/check-types': 'error',
    'jsdoc/implements-on-classes': 'error',
    'jsdoc/tag-lines': ['error', 'any', {startLines: 1}],
    'jsdoc/require-jsdoc': ['error', {exemptEmptyFunctions: true, publicOnly: {esm: true}}],
    'jsdoc/require-param': 'error',
    'jsdoc/require-param-description': 'off',
    'jsdoc/require-param-name': 'error',
    'jsdoc/require-param-type': 'error',
};

export default [
    {
        // this directory's node_modules and dist; the extension and the gjs tests are linted
        ignores: ['node_modules/**', 'dist/**'],
    },
    js.configs.recommended,
    {
        files: ['**/*.js'],
        plugins: {'@stylistic': stylistic, jsdoc},
        languageOptions: {
            ecmaVersion: 2022,
            sourceType: 'module',
            globals: GJS_GLOBALS,
        },
        settings: {jsdoc: {mode: 'typescript'}},
        linterOptions: {reportUnusedDisableDirectives: 'error'},
        rules: {...layout, ...logic, ...docs},
    },
    {
        // this file runs under Node, not gjs
        files: ['eslint.config.js'],
        languageOptions: {globals: globals.node},
    },
];
