#!/usr/bin/env node
/**
 * The `gmq-hub` command (package.json `bin`). A committed file, so `npx gmq-hub` works right
 * after `npm install` and after any rebuild: tsc recreates dist/ files without an exec bit, and
 * before the first build there is no dist/ at all. It builds dist/ when it is missing or older
 * than the sources (bin/build.js; tsc output on stderr), then runs dist/bootstrap/cli.js.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ensureBuilt } from './build.js';

const cli = fileURLToPath(new URL('../dist/bootstrap/cli.js', import.meta.url));
// An installed package without TypeScript runs the dist/ it ships; a checkout keeps it current.
if (!ensureBuilt({ quiet: true }) && !existsSync(cli)) process.exit(1);
await import(cli);
