/**
 * Plain-text output for people: aligned tables for lists, `key  value` blocks for one object.
 * (`--json` bypasses all of this and prints the API's answer.)
 */

/** Columns padded to their widest cell; the last column is not padded. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  if (rows.length === 0) return '';
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join('\n')}\n`;
}

/** `key  value` lines; multi-line values continue indented under the value column. */
export function block(pairs: ReadonlyArray<readonly [string, string]>): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return `${pairs.map(([k, v]) => `${k.padEnd(w)}  ${v.split('\n').join(`\n${' '.repeat(w + 2)}`)}`).join('\n')}\n`;
}

/** An ISO time to the second (`2025-03-01 12:00:05Z`), or `-`. */
export function when(iso: string | null | undefined): string {
  if (!iso) return '-';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}Z`;
}

/** A value for a cell: `-` for null/undefined/'', compact JSON for objects. */
export function cell(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : `${Math.round(v)} ms`;
}
