#!/usr/bin/env node
// Validates AsyncAPI documents with the official parser (@asyncapi/parser).
//
//   node validate.mjs [--strict] FILE...
//
// Prints every diagnostic as `FILE:LINE:COL: SEVERITY CODE at PATH: MESSAGE` (PATH is a JSON
// pointer into the document), then one summary line per file, all on stdout; usage errors and
// unreadable files go to stderr.
// Exit status: 0 when no file has an error (with --strict: no error and no warning);
//              1 when some file has one (every file is still checked and reported);
//              2 on a usage error or a file that cannot be read.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Parser } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'info', 'hint'];
const USAGE = 'usage: validate.mjs [--strict] FILE...';

function pointer(segments) {
  if (!segments || segments.length === 0) return '#';
  return '#/' + segments.map((s) => String(s).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
}

function parseArgs(argv) {
  let strict = false;
  const files = [];
  let options = true;
  for (const arg of argv) {
    if (options && arg === '--') options = false;
    else if (options && arg === '--strict') strict = true;
    else if (options && (arg === '-h' || arg === '--help')) {
      console.log(USAGE);
      process.exit(0);
    } else if (options && arg.startsWith('-') && arg !== '-') {
      console.error(`validate.mjs: unknown option ${arg}\n${USAGE}`);
      process.exit(2);
    } else files.push(arg);
  }
  if (files.length === 0) {
    console.error(`validate.mjs: no file given\n${USAGE}`);
    process.exit(2);
  }
  return { strict, files };
}

async function main() {
  const { strict, files } = parseArgs(process.argv.slice(2));
  const parser = new Parser();
  let unreadable = 0;
  let failed = 0;
  for (const file of files) {
    let text;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      console.error(`${file}: cannot read: ${err.message}`);
      unreadable += 1;
      continue;
    }
    // `source` lets relative external $refs resolve against the file's own folder.
    const { diagnostics } = await parser.parse(text, { source: path.resolve(file) });
    const counts = [0, 0, 0, 0];
    const sorted = [...diagnostics].sort(
      (a, b) => a.severity - b.severity || (a.range?.start?.line ?? 0) - (b.range?.start?.line ?? 0),
    );
    for (const d of sorted) {
      counts[d.severity] = (counts[d.severity] ?? 0) + 1;
      const line = (d.range?.start?.line ?? 0) + 1;
      const col = (d.range?.start?.character ?? 0) + 1;
      const severity = SEVERITY[d.severity] ?? `severity-${d.severity}`;
      console.log(`${file}:${line}:${col}: ${severity} ${d.code} at ${pointer(d.path)}: ${d.message}`);
    }
    const bad = counts[0] > 0 || (strict && counts[1] > 0);
    if (bad) failed += 1;
    const summary =
      `${counts[0]} error(s), ${counts[1]} warning(s), ${counts[2]} info, ${counts[3]} hint(s)`;
    console.log(`${file}: ${bad ? 'INVALID' : 'valid'}${strict ? ' (strict)' : ''}: ${summary}`);
  }
  if (unreadable > 0) process.exit(2);
  if (failed > 0) {
    console.log(`validate.mjs: ${failed} of ${files.length} file(s) invalid`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(`validate.mjs: ${err?.stack ?? err}`);
  process.exit(2);
});
