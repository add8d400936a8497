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

  async get(urlPath: string): Promise<StaticFile | null> {
    let rel: string;
    try {
      rel = decodeURIComponent(urlPath.split('?')[0]);
    } catch {
      return null;
    }
    if (rel.includes('\0')) return null;
    if (rel === '' || rel.endsWith('/')) rel += 'index.html';
    const file = path.resolve(this.root, `.${path.posix.normalize(`/${rel}`)}`);
    if (file !== this.root && !file.startsWith(this.root + path.sep)) return null;
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
