/**
 * Group commit for the hand-coded floor (bench/floor-child.ts): rows added in one turn of the
 * event loop go out as one statement; while `maxInFlight` statements are running, new rows
 * wait and join the next one ("whatever arrived"). At 1 in flight a batch holds one row, so the
 * sync latency of the floor is that of a plain INSERT; at 64 or 256 in flight it is the
 * micro-batched rate issue 13 measured the hub against.
 *
 * @example
 *   const inserts = new MicroBatch<Row>((rows) => pool.query(insertMany(rows)).then(() => undefined));
 *   await inserts.add(row); // resolved once the statement holding `row` committed
 */
interface Batch<T> {
  items: T[];
  done: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

export class MicroBatch<T> {
  /** statements run, rows written: their ratio is the mean batch size */
  batches = 0;
  rows = 0;
  private open?: Batch<T>;
  private scheduled = false;
  private inFlight = 0;

  constructor(
    private readonly write: (items: T[]) => Promise<void>,
    private readonly maxInFlight = 2,
  ) {}

  /** Resolves when the statement that carries `item` has committed; rejects with its error. */
  add(item: T): Promise<void> {
    if (!this.open) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.open = { items: [], done, resolve, reject };
    }
    this.open.items.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      // setImmediate runs after the poll phase: every request read in this turn is in the batch
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    return this.open.done;
  }

  private flush(): void {
    const b = this.open;
    if (!b || this.inFlight >= this.maxInFlight) return;
    this.open = undefined;
    this.inFlight++;
    this.batches++;
    this.rows += b.items.length;
    this.write(b.items)
      .then(b.resolve, b.reject)
      .finally(() => {
        this.inFlight--;
        // rows that arrived while every slot was busy go out now, as one statement
        this.flush();
      });
  }
}
