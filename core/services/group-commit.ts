/**
 * Group commit (docs/architecture.md#performance-decisions: one INSERT per commit ≈ 2 k rows/s,
 * 500-row statements ≈ 44 k rows/s): items handed in during one turn of the event loop are
 * written by ONE call of `write`, which is one statement and so one commit. Alone, an item waits
 * no timer: its statement goes out on the next turn. Under load, the items that arrive while a
 * statement runs form the next group, so at most one statement of a kind is in flight and the
 * groups grow with the load.
 *
 * A group that fails as a whole is written again item by item, so one bad item (a value the
 * database refuses) fails alone and the others are stored; an outage fails each of them, and
 * each caller gets its own error.
 *
 * @example
 *   const rows = new GroupCommit((items: Rec[]) => run<Row>(db, INSERT, [JSON.stringify(items)]));
 *   const row = await rows.add(rec); // committed when this resolves
 */

/** Largest group in one statement by default (bind size stays a few MB at 64 KB items). */
const DEFAULT_MAX_GROUP = 500;

interface Waiting<I, O> {
  item: I;
  resolve: (out: O) => void;
  reject: (err: unknown) => void;
}

export class GroupCommit<I, O> {
  private queue: Waiting<I, O>[] = [];
  private running = false;
  private scheduled = false;
  /** Statements written (each is one commit), for a module's counters. */
  statements = 0;

  /**
   * @param write writes a group in one statement and returns one answer per item, in the
   *   items' order (same length).
   */
  constructor(
    private readonly write: (items: I[]) => Promise<O[]>,
    private readonly maxGroup = DEFAULT_MAX_GROUP,
  ) {}

  /** Resolves with the item's answer once its group committed; rejects with its own error. */
  add(item: I): Promise<O> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Items waiting for a statement (not counting the group being written). */
  get waiting(): number {
    return this.queue.length;
  }

  private schedule(): void {
    if (this.running || this.scheduled || this.queue.length === 0) return;
    this.scheduled = true;
    // the rest of this turn's items join the group
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.maxGroup);
        try {
          this.settle(group, await this.counted(group.map((w) => w.item)));
        } catch {
          // one bad item must not fail the others: each alone, each with its own answer
          for (const w of group) {
            try {
              this.settle([w], await this.counted([w.item]));
            } catch (err) {
              w.reject(err);
            }
          }
        }
      }
    } finally {
      this.running = false;
      this.schedule();
    }
  }

  private counted(items: I[]): Promise<O[]> {
    this.statements++;
    return this.write(items);
  }

  private settle(group: Waiting<I, O>[], answers: O[]): void {
    if (answers.length !== group.length) {
      const err = new Error(`group commit: ${answers.length} answers for ${group.length} items`);
      for (const w of group) w.reject(err);
      return;
    }
    for (let i = 0; i < group.length; i++) group[i].resolve(answers[i]);
  }
}
