#!/usr/bin/env node
// Renders one AsyncAPI document to a single self-contained HTML page with the official
// AsyncAPI React component (@asyncapi/react-component), rendered server-side.
//
//   node render.mjs [--no-js] IN OUT.html
//
// The page needs no network when viewed: the component's stylesheet is inlined, and (unless
// --no-js) so are its browser bundle and the parsed document, which make the rendered markup
// interactive (collapsed schemas, "expand all") as @asyncapi/html-template's single-file output
// does. With --no-js the page is markup and CSS only (about 20x smaller), but what the component
// renders collapsed (payload properties, reply details) stays collapsed.
// Exit status: 0 written; 1 the document has errors (printed); 2 usage error, unreadable input
// or unwritable output.
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const USAGE = 'usage: render.mjs [--no-js] IN OUT.html';
const SEVERITY = ['error', 'warning', 'info', 'hint'];

function fail(code, message) {
  console.error(`render.mjs: ${message}`);
  process.exit(code);
}

// Text that goes inside <script> or <style>: nothing in it may close the element early.
function scriptSafe(text) {
  return text
    .replace(/<\/(script|style)/gi, '<\\/$1')
    .replace(/<!--/g, '<\\!--')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

// JSON for a <script>: `<` as \u003c can never end the element or open a comment.
function jsonForScript(value) {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

function escapeHtml(text) {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

async function main() {
  const args = process.argv.slice(2);
  let withJs = true;
  const positional = [];
  for (const arg of args) {
    if (arg === '--no-js') withJs = false;
    else if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      return;
    } else if (arg.startsWith('-') && arg !== '-') fail(2, `unknown option ${arg}\n${USAGE}`);
    else positional.push(arg);
  }
  if (positional.length !== 2) fail(2, USAGE);
  const [input, output] = positional;

  let text;
  try {
    text = await readFile(input, 'utf8');
  } catch (err) {
    fail(2, `${input}: cannot read: ${err.message}`);
  }

  // The component's own (CommonJS) copies: the document must come from the very parser module
  // the component checks it with.
  const { Parser, stringify } = require('@asyncapi/parser');
  const React = require('react');
  const { renderToString } = require('react-dom/server');
  const { AsyncApiComponentWP } = require('@asyncapi/react-component');

  const { document, diagnostics } = await new Parser().parse(text, { source: path.resolve(input) });
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (!document || errors.length > 0) {
    for (const d of errors) {
      const line = (d.range?.start?.line ?? 0) + 1;
      console.error(`${input}:${line}: ${SEVERITY[d.severity]} ${d.code} at ${d.path.join('.')}: ${d.message}`);
    }
    fail(1, `${input}: not rendered, the document has ${errors.length} error(s)`);
  }

  // Sidebar on: a table of contents with in-page links, which work without script too.
  const config = { show: { sidebar: true } };
  let markup;
  try {
    markup = renderToString(React.createElement(AsyncApiComponentWP, { schema: document, config }));
  } catch (err) {
    fail(1, `${input}: the AsyncAPI component failed to render it: ${err?.stack ?? err}`);
  }
  if (!markup || !markup.includes('aui-root')) fail(1, `${input}: the AsyncAPI component rendered nothing`);

  const componentDir = path.dirname(require.resolve('@asyncapi/react-component/package.json'));
  const css = await readFile(path.join(componentDir, 'styles', 'default.min.css'), 'utf8');
  let script = '';
  if (withJs) {
    const bundle = await readFile(path.join(componentDir, 'browser', 'standalone', 'without-parser.js'), 'utf8');
    script =
      `<script>${scriptSafe(bundle)}</script>\n` +
      `<script>AsyncApiStandalone.hydrate({ schema: ${jsonForScript(stringify(document))}, ` +
      `config: ${jsonForScript(config)} }, document.getElementById('root'));</script>\n`;
  }

  const info = document.info();
  const title = `${info.title()} ${info.version()}`;
  const html =
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n' +
    `<meta name="generator" content="@asyncapi/react-component">\n` +
    `<title>${escapeHtml(title)}</title>\n<style>${scriptSafe(css)}</style>\n</head>\n<body>\n` +
    `<div id="root">${markup}</div>\n${script}</body>\n</html>\n`;
  try {
    await writeFile(output, html);
  } catch (err) {
    fail(2, `${output}: cannot write: ${err.message}`);
  }
  console.log(`render.mjs: ${input} -> ${output} (${Math.round(html.length / 1024)} KiB${withJs ? '' : ', no script'})`);
}

main().catch((err) => fail(2, err?.stack ?? String(err)));
