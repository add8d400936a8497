/**
 * The child process of initDataDirApart (pglite.ts): creates an embedded database in the data
 * directory given as argv[2] with the hub's settings, closes it and exits 0. Its memory goes
 * with it.
 */
import { pgliteClass, pgliteStartParams } from './pglite.js';

const [dataDir, sharedBuffers] = process.argv.slice(2);
const PGlite = pgliteClass();
const db = new PGlite(dataDir, { startParams: pgliteStartParams(sharedBuffers || undefined) });
await db.waitReady;
await db.query('SELECT 1');
await db.close();
process.exit(0);
