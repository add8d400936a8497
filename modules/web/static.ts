import { readdirSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/** The dashboard's pages load nothing from elsewhere; the API and the WebSocket are same-origin. */
export const DASHBOARD_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export interface StaticFile {
  body: Buffer;
  type: string;
}

/**
 * Files of one directory, by URL path. Never leaves the directory: the decoded path is resolved
 * and must stay under the root (no `..`, no absolute paths, no NUL); only known file types are
 * served, and `/` is index.html.
 */
export class StaticFiles {
  private readonly root: string;

  constructor(dir: string) {
    this.root = path.resolve(dir);
  }

  /**
   * The URL paths of the files there is to serve (`/dir/` too for each `index.html`), read when
   * the server is built: each becomes a public route of its own, so the server has no catch-all
   * and a path that names no file is a 404 behind the token like any other. Names the router
   * would read as patterns (`:`, `*`) or that are hidden are left out.
   */
  list(): string[] {
    const out: string[] = [];
    const walk = (dir: string, prefix: string, depth: number) => {
      if (depth > 8) return;
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (!/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(e.name)) continue;
        if (e.isDirectory()) walk(path.join(dir, e.name), `${prefix}${e.name}/`, depth + 1);
        else if (e.isFile() && TYPES[path.extname(e.name).toLowerCase()]) out.push(`${prefix}${e.name}`);
      }
    };
    try {
      walk(this.root, '/', 0);
    } catch {
      return [];
    }
    for (const p of [...out]) {
      if (!p.endsWith('/index.html')) continue;
      const dir = p.slice(0, -'index.html'.length);
      out.push(dir);
      // `/docs` as well as `/docs/`: what a person types (the page names its files by absolute path)
      if (dir !== '/') out.push(dir.slice(0, -1));
    }
    return out;
  }

  async get(urlPath: string): Promise<StaticFile | null> {
    let rel: string;
    try {
      rel = decodeURIComponent(urlPath.split('?')[0]);
    } catch {
      return null;
    }
    if (rel.includes('\0')) return null;
    if (rel === '' || rel.endsWith('/')) rel += 'index.html';
    let file = path.resolve(this.root, `.${path.posix.normalize(`/${rel}`)}`);
    if (file !== this.root && !file.startsWith(this.root + path.sep)) return null;
    // `/docs` is its directory's index.html, as `/docs/` is
    if (file !== this.root && (await stat(file).catch(() => null))?.isDirectory()) file = path.join(file, 'index.html');
    const type = TYPES[path.extname(file).toLowerCase()];
    if (!type) return null;
    try {
      if (!(await stat(file)).isFile()) return null;
      return { body: await readFile(file), type };
    } catch {
      return null;
    }
  }
}
