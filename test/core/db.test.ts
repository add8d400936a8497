import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { before, describe, test } from 'node:test';
import pino from 'pino';
import { errorCode, HubError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import { type DbConfig, DbPool, type Migration } from '../../core/services/db.js';
import { PGLITE_SHARED_BUFFERS } from '../../core/services/pglite.js';
import { preparePgliteTemplate, TEST_DATABASE_URL, tempPgliteConfig, withPgSchema } from '../helpers/db.js';

type Fixture = { config: DbConfig; cleanup(): Promise<void> };
const drivers: { name: 'pglite' | 'pg'; fixture(): Promise<Fixture> }[] = [
  {
    name: 'pglite',
    fixture: async () => {
      const t = tempPgliteConfig();
      return { config: t.config, cleanup: async () => t.cleanup() };
    },
  },
  {
    name: 'pg',
    fixture: async () => {
      const s = await withPgSchema();
      return { config: s.config, cleanup: s.drop };
    },
  },
];

/** Runs `fn` with a pool on a fresh database (schema or data dir) and always cleans up. */
async function withPool<T>(fixture: () => Promise<Fixture>, fn: (pool: DbPool, f: Fixture) => Promise<T>) {
  const f = await fixture();
  const pool = new DbPool({ default: f.config }, silentLogger());
  try {
    return await fn(pool, f);
  } finally {
    await pool.close();
    await f.cleanup();
  }
}

function capturingLogger(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const dest = new Writable({
    write(chunk, _enc, cb) {
      lines.push(JSON.parse(String(chunk)));
      cb();
    },
  });
  return { log: pino({ level: 'info' }, dest), lines };
}

// Steps record the order they ran in; 002 is listed first to prove sorting by id.
const ordered: Migration[] = [
  { id: '002_second', up: "INSERT INTO steps (id) VALUES ('002_second')" },
  {
    id: '001_first',
    // Several statements, and a jsonb `?` operator that knex must not take for a binding.
    up: `CREATE TABLE steps (n serial PRIMARY KEY, id text NOT NULL);
         CREATE TABLE docs (id int PRIMARY KEY, doc jsonb NOT NULL CHECK (doc ? 'kind'));
         INSERT INTO steps (id) VALUES ('001_first');`,
  },
  { id: '010_tenth', up: "INSERT INTO steps (id) VALUES ('010_tenth')" },
];

for (const d of drivers) {
  describe(`DbPool on ${d.name}`, () => {
    before(async () => {
      if (d.name === 'pglite') await preparePgliteTemplate();
    });

    test('migrate applies in id order, records each, and logs one line per migration', async () => {
      const { log, lines } = capturingLogger();
      const f = await d.fixture();
      const pool = new DbPool({ default: f.config }, log);
      try {
        assert.deepEqual(await pool.migrate('mod_a', ordered), ['001_first', '002_second', '010_tenth']);
        const db = pool.get();
        assert.deepEqual(await db('steps').orderBy('n').pluck('id'), ['001_first', '002_second', '010_tenth']);
        const rows = await db('hub_migrations').where({ owner: 'mod_a' }).orderBy('id');
        assert.deepEqual(
          rows.map((r) => r.id),
          ['001_first', '002_second', '010_tenth'],
        );
        assert.ok(rows.every((r) => r.applied_at instanceof Date));
        const applied = lines.filter((l) => l.msg === 'migration applied');
        assert.deepEqual(
          applied.map((l) => [l.owner, l.id]),
          [
            ['mod_a', '001_first'],
            ['mod_a', '002_second'],
            ['mod_a', '010_tenth'],
          ],
        );
        await assert.rejects(db('docs').insert({ id: 1, doc: { nokind: 1 } }), /check constraint/);
      } finally {
        await pool.close();
        await f.cleanup();
      }
    });

    test('a second migrate applies nothing; a new migration alone is applied; owners are separate', async () => {
      await withPool(d.fixture, async (pool) => {
        await pool.migrate('mod_a', ordered);
        assert.deepEqual(await pool.migrate('mod_a', ordered), []);
        const more = [...ordered, { id: '011_more', up: "INSERT INTO steps (id) VALUES ('011_more')" }];
        assert.deepEqual(await pool.migrate('mod_a', more), ['011_more']);
        // Same ids, another owner: recorded separately.
        assert.deepEqual(await pool.migrate('mod_b', [{ id: '001_first', up: 'CREATE TABLE b_things (x int)' }]), [
          '001_first',
        ]);
        assert.equal(await count(pool, 'steps'), '4');
      });
    });

    test('a failing migration raises DB_ERR_MIGRATION; earlier ones stay, it is rolled back', async () => {
      await withPool(d.fixture, async (pool) => {
        const list: Migration[] = [
          { id: '001_ok', up: 'CREATE TABLE ok_table (x int)' },
          { id: '002_bad', up: 'CREATE TABLE half_done (x int); SELECT * FROM no_such_table' },
          { id: '003_later', up: 'CREATE TABLE later_table (x int)' },
        ];
        const err = await pool.migrate('mod_f', list).then(
          () => assert.fail('migrate should have failed'),
          (e: unknown) => e,
        );
        assert.ok(err instanceof HubError);
        assert.equal(err.code, 'DB_ERR_MIGRATION');
        assert.match(err.message, /mod_f\/002_bad/);
        assert.deepEqual(err.details, { owner: 'mod_f', id: '002_bad', db: 'default' });
        assert.match(String((err.cause as Error).message), /no_such_table/);
        const db = pool.get();
        assert.deepEqual(await db('hub_migrations').where({ owner: 'mod_f' }).pluck('id'), ['001_ok']);
        assert.equal(await db.schema.hasTable('ok_table'), true);
        assert.equal(await db.schema.hasTable('half_done'), false, 'DDL of the failed migration rolled back');
        assert.equal(await db.schema.hasTable('later_table'), false);
        // Fixed, it resumes where it stopped.
        list[1] = { id: '002_bad', up: 'CREATE TABLE half_done (x int)' };
        assert.deepEqual(await pool.migrate('mod_f', list), ['002_bad', '003_later']);
      });
    });

    test('function migrations run in the transaction and mix with SQL ones', async () => {
      await withPool(d.fixture, async (pool) => {
        const list: Migration[] = [
          {
            id: '001_fn',
            up: async (db) => {
              await db.schema.createTable('fn_table', (t) => {
                t.increments('id');
                t.text('name').notNullable();
              });
              await db('fn_table').insert({ name: 'from fn' });
            },
          },
          { id: '002_sql', up: "INSERT INTO fn_table (name) VALUES ('from sql')" },
          {
            id: '003_fn_fails',
            up: async (db) => {
              await db('fn_table').insert({ name: 'rolled back' });
              throw new Error('boom');
            },
          },
        ];
        await assert.rejects(pool.migrate('mod_fn', list), (e) => errorCode(e) === 'DB_ERR_MIGRATION');
        assert.deepEqual(await pool.get()('fn_table').orderBy('id').pluck('name'), ['from fn', 'from sql']);
      });
    });

    test('queries give identical results: upsert, rollback, SKIP LOCKED, jsonb, timestamptz, int8, bytea', async () => {
      await withPool(d.fixture, async (pool) => {
        await pool.migrate('q', [
          {
            id: '001',
            up: `CREATE TABLE kv (k text PRIMARY KEY, v int NOT NULL, doc jsonb, at timestamptz, big bigint, bin bytea);
                 CREATE TABLE jobs (id int PRIMARY KEY, state text NOT NULL)`,
          },
        ]);
        const db = pool.get();
        const at = new Date('2024-01-02T03:04:05.678Z');
        const doc = { kind: 'x', list: [1, 'two', null], nested: { ok: true } };
        const inserted = await db('kv')
          .insert({ k: 'a', v: 1, doc, at, big: '9007199254740993', bin: Buffer.from([1, 2, 255]) })
          .returning(['k', 'v']);
        assert.deepEqual(inserted, [{ k: 'a', v: 1 }]);
        // A top-level JSON array must be stringified: node-postgres would send a JS array as a
        // PostgreSQL array literal.
        await db('kv').insert({ k: 'b', v: 2, doc: JSON.stringify([1, 2]), at: '2024-06-01T12:00:00+02:00' });

        const upserted = await db.raw(
          'INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = kv.v + EXCLUDED.v RETURNING k, v',
          ['a', 10],
        );
        assert.deepEqual(upserted.rows, [{ k: 'a', v: 11 }]);
        await db('kv').insert({ k: 'c', v: 3 }).onConflict('k').merge();
        await db('kv').insert({ k: 'c', v: 4 }).onConflict('k').merge(['v']);

        await assert.rejects(
          db.transaction(async (trx) => {
            await trx('kv').insert({ k: 'gone', v: 0 });
            await trx('kv').where({ k: 'a' }).update({ v: 999 });
            throw new Error('roll back');
          }),
          /roll back/,
        );

        await db('jobs').insert([
          { id: 1, state: 'new' },
          { id: 2, state: 'new' },
          { id: 3, state: 'done' },
        ]);
        const claimed = await db.transaction(async (trx) => {
          const raw = await trx.raw(
            "SELECT id FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
          );
          const built = await trx('jobs').where({ state: 'new' }).orderBy('id').forUpdate().skipLocked().pluck('id');
          return { raw: raw.rows, built };
        });

        const rows = await db('kv').orderBy('k').select('k', 'v', 'doc', 'at', 'big', 'bin');
        const agg = await db('kv').select(db.raw('count(*) AS n, sum(v) AS total, max(at) AS latest')).first();
        assert.deepEqual(
          { rows, agg, claimed },
          {
            rows: [
              { k: 'a', v: 11, doc, at, big: '9007199254740993', bin: Buffer.from([1, 2, 255]) },
              { k: 'b', v: 2, doc: [1, 2], at: new Date('2024-06-01T10:00:00Z'), big: null, bin: null },
              { k: 'c', v: 4, doc: null, at: null, big: null, bin: null },
            ],
            agg: { n: '3', total: '17', latest: new Date('2024-06-01T10:00:00Z') },
            claimed: { raw: [{ id: 1 }], built: [1, 2] },
          },
        );
        const arr = await db.raw('SELECT ARRAY[1, 2]::bigint[] AS big, ARRAY[1, 2]::int[] AS small');
        assert.deepEqual(arr.rows, [{ big: ['1', '2'], small: [1, 2] }]);
      });
    });

    test('unknown database name fails with DB_ERR_UNKNOWN_DATABASE naming it', async () => {
      await withPool(d.fixture, async (pool) => {
        assert.deepEqual(pool.names(), ['default']);
        assert.throws(
          () => pool.get('nope'),
          (e) => errorCode(e) === 'DB_ERR_UNKNOWN_DATABASE' && /"nope"/.test((e as Error).message),
        );
        await assert.rejects(pool.migrate('x', [], 'nope'), (e) => errorCode(e) === 'DB_ERR_UNKNOWN_DATABASE');
        assert.equal(await pool.ping('nope'), false);
      });
    });

    test('ping is true on a live database; close() is idempotent and the pool refuses use after it', async () => {
      const f = await d.fixture();
      const pool = new DbPool({ default: f.config }, silentLogger());
      try {
        assert.equal(await pool.ping(), true);
        const db = pool.get();
        assert.equal(pool.get(), db, 'one knex instance per name');
        await Promise.all([pool.close(), pool.close()]);
        await pool.close();
        assert.throws(
          () => pool.get(),
          (e) => errorCode(e) === 'DB_ERR_CONFIG',
        );
        assert.equal(await pool.ping(), false);
      } finally {
        await pool.close();
        await f.cleanup();
      }
    });

    test('concurrent migrators apply each migration exactly once', async () => {
      // pg: two pools stand for two hub instances on one server. PGlite cannot share a data
      // dir between pools, so there two calls race on one pool (one connection).
      const f = await d.fixture();
      const a = new DbPool({ default: f.config }, silentLogger());
      const b = d.name === 'pg' ? new DbPool({ default: f.config }, silentLogger()) : a;
      const list: Migration[] = [
        { id: '001', up: 'CREATE TABLE once (id text PRIMARY KEY)' }, // fails if run twice
        ...['002', '003', '004', '005'].map((id) => ({ id, up: `INSERT INTO once VALUES ('${id}')` })),
      ];
      try {
        const [ra, rb] = await Promise.all([a.migrate('racer', list), b.migrate('racer', list)]);
        assert.deepEqual([...ra, ...rb].sort(), ['001', '002', '003', '004', '005']);
        assert.deepEqual(await a.get()('once').orderBy('id').pluck('id'), ['002', '003', '004', '005']);
      } finally {
        await a.close();
        await b.close();
        await f.cleanup();
      }
    });
  });
}

describe('DbPool specifics', () => {
  test('PGlite data persists across close and reopen of the same data_dir', async () => {
    await preparePgliteTemplate();
    const t = tempPgliteConfig();
    try {
      const first = new DbPool({ default: t.config }, silentLogger());
      await first.migrate('p', [{ id: '001', up: 'CREATE TABLE kept (v text)' }]);
      await first.get()('kept').insert({ v: 'still here' });
      await assert.rejects(
        async () => new DbPool({ default: t.config }, silentLogger()).get(),
        (e) => errorCode(e) === 'DB_ERR_CONFIG',
        'a second open of the same data_dir is refused',
      );
      await first.close();

      const second = new DbPool({ default: t.config }, silentLogger());
      try {
        assert.deepEqual(await second.migrate('p', [{ id: '001', up: 'CREATE TABLE kept (v text)' }]), []);
        assert.deepEqual(await second.get()('kept').pluck('v'), ['still here']);
      } finally {
        await second.close();
      }
    } finally {
      t.cleanup();
    }
  });

  test('a fresh PGlite data_dir is created in a child process; the hub opens it with its buffer size', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-fresh-'));
    const dataDir = path.join(dir, 'db');
    try {
      const pool = new DbPool(
        { default: { driver: 'pglite', data_dir: dataDir, shared_buffers: '16MB' } },
        silentLogger(),
      );
      try {
        await pool.prepareDataDirs();
        // created before this process opened anything: the child's init, not ours
        assert.ok(fs.existsSync(path.join(dataDir, 'PG_VERSION')), 'the child created the database');
        const rows = (await pool.get().raw('SHOW shared_buffers')).rows as Array<{ shared_buffers: string }>;
        assert.deepEqual(rows, [{ shared_buffers: '16MB' }]);
        await pool.prepareDataDirs(); // an existing directory is left alone
      } finally {
        await pool.close();
      }
      const again = new DbPool({ default: { driver: 'pglite', data_dir: dataDir } }, silentLogger());
      try {
        const rows = (await again.get().raw('SHOW shared_buffers')).rows as Array<{ shared_buffers: string }>;
        assert.deepEqual(rows, [{ shared_buffers: PGLITE_SHARED_BUFFERS }], 'the default when none is configured');
      } finally {
        await again.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('PGlite in memory, with a schema', async () => {
    const pool = new DbPool({ mem: { driver: 'pglite', data_dir: 'memory://', schema: 'hub' } }, silentLogger());
    try {
      assert.deepEqual(
        await pool.migrate('m', [{ id: '001', up: 'CREATE TABLE t (x int); INSERT INTO t VALUES (7)' }], 'mem'),
        ['001'],
      );
      const db = pool.get('mem');
      assert.deepEqual(await db('t').pluck('x'), [7]);
      const where = await db.raw(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'hub_migrations'",
      );
      assert.deepEqual(where.rows, [{ table_schema: 'hub' }]);
      assert.equal(await pool.ping('mem'), true);
    } finally {
      await pool.close();
    }
  });

  test('pg: tables land in the configured schema, created on first use if missing', async () => {
    const { config, drop } = await withPgSchema();
    await drop(); // the pool must create it itself
    const pool = new DbPool({ default: config }, silentLogger());
    try {
      await pool.migrate('s', [{ id: '001', up: 'CREATE TABLE in_schema (x int)' }]);
      const r = await pool
        .get()
        .raw("SELECT table_schema FROM information_schema.tables WHERE table_name = 'in_schema' AND table_schema = ?", [
          config.schema!,
        ]);
      assert.equal(r.rows.length, 1);
    } finally {
      await pool.close();
      await drop();
    }
  });

  test('pg: a server where autovacuum cannot run gets one warning, after the first migrate, naming both settings', async () => {
    const { config, drop } = await withPgSchema();
    const { log, lines } = capturingLogger();
    const pool = new DbPool({ default: config }, log);
    try {
      await pool.migrate('a', [{ id: '001', up: 'CREATE TABLE av_a (x int)' }]);
      await pool.migrate('b', [{ id: '001', up: 'CREATE TABLE av_b (x int)' }]);
      const r = await pool
        .get()
        .raw("SELECT current_setting('autovacuum') AS autovacuum, current_setting('track_counts') AS track_counts");
      const { autovacuum, track_counts } = r.rows[0];
      const warned = lines.filter((l) => l.level === 40 && /autovacuum cannot run/.test(String(l.msg)));
      // the machine's own server decides which way this goes (CI's runs with autovacuum = off)
      if (autovacuum === 'on' && track_counts === 'on') assert.equal(warned.length, 0);
      else {
        assert.equal(warned.length, 1, 'one warning for the database, not one per module');
        assert.deepEqual(
          [warned[0].db, warned[0].autovacuum, warned[0].track_counts],
          ['default', autovacuum, track_counts],
        );
      }
    } finally {
      await pool.close();
      await drop();
    }
  });

  test('pglite: no autovacuum check (it runs none and plans every hot statement anew)', async () => {
    const t = tempPgliteConfig();
    const { log, lines } = capturingLogger();
    const pool = new DbPool({ default: t.config }, log);
    try {
      await pool.migrate('a', [{ id: '001', up: 'CREATE TABLE av_c (x int)' }]);
      assert.equal(lines.filter((l) => /autovacuum/.test(String(l.msg))).length, 0);
    } finally {
      await pool.close();
      t.cleanup();
    }
  });

  test('pg: ping is false, quickly, for a closed port; the log never shows the password', async () => {
    const { log, lines } = capturingLogger();
    const pool = new DbPool(
      {
        dead: { driver: 'pg', url: 'postgres://hub:s3cret@127.0.0.1:1/test' },
        live: { driver: 'pg', url: TEST_DATABASE_URL.replace('//postgres@', '//postgres:s3cret@') },
      },
      log,
    );
    try {
      const started = Date.now();
      assert.equal(await pool.ping('dead'), false);
      assert.ok(Date.now() - started < 1500, `ping took ${Date.now() - started} ms`);
      assert.equal(await pool.ping('live'), true);
      const text = lines.map((l) => JSON.stringify(l)).join('\n');
      assert.doesNotMatch(text, /s3cret/);
      assert.match(text, /hub:\*\*\*@127\.0\.0\.1:1/);
    } finally {
      await pool.close();
    }
  });

  test('invalid configs fail at construction with DB_ERR_CONFIG', () => {
    const bad = [
      { driver: 'pg' },
      { driver: 'mysql' },
      { driver: 'pglite', schema: 'x"; DROP' },
      { driver: 'pg', url: 'postgres://x', pool: { min: 5, max: 1 } },
    ] as DbConfig[];
    for (const cfg of bad) {
      assert.throws(
        () => new DbPool({ default: cfg }, silentLogger()),
        (e) => errorCode(e) === 'DB_ERR_CONFIG',
      );
    }
  });
});

async function count(pool: DbPool, table: string): Promise<unknown> {
  const row = await pool.get()(table).count({ n: '*' }).first();
  return row?.n;
}

test('PGlite and knex-pglite load only when a database uses PGlite, and then once', async () => {
  // a fresh process: this file's other tests load PGlite themselves
  const { execFileSync } = await import('node:child_process');
  const dbModule = new URL('../../core/services/db.js', import.meta.url).href;
  const logModule = new URL('../../core/log.js', import.meta.url).href;
  const script = `
    import { createRequire } from 'node:module';
    const { DbPool } = await import(${JSON.stringify(dbModule)});
    const { silentLogger } = await import(${JSON.stringify(logModule)});
    const loaded = () => Object.keys(createRequire(import.meta.url).cache).filter((k) => /pglite/.test(k)).length;
    const before = loaded();
    const pool = new DbPool({ default: { driver: 'pglite', data_dir: 'memory://' } }, silentLogger());
    const rows = await pool.get().raw('SELECT 1 AS one');
    await pool.close();
    console.log(JSON.stringify({ before, after: loaded(), one: rows.rows[0].one }));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  const got = JSON.parse(out.trim().split('\n').pop()!) as { before: number; after: number; one: number };
  assert.equal(got.before, 0, 'nothing of PGlite is loaded by importing the pool');
  assert.ok(got.after >= 2, `knex-pglite and PGlite's CommonJS build are loaded once used (${got.after} files)`);
  assert.equal(got.one, 1);
});
