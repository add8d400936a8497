import { HubError } from './errors.js';

/** One module as the graph sees it: what it must start after, and whether it takes outside input. */
export interface GraphNode {
  /** Modules named in config.yml (`depends_on`): each must be in the graph. */
  readonly requires: readonly string[];
  /** Modules its provider declares (`dependencies`): followed when they are in the graph, ignored otherwise. */
  readonly after: readonly string[];
  /** An ingress (provider `ingress: true`) starts as late as its dependents allow: see ModuleGraph. */
  readonly ingress?: boolean;
}

/**
 * The one ordering of the host's modules, built from config.yml's `depends_on` (hard: the module
 * must be there) and the providers' `dependencies` (soft: followed when that module is there).
 *
 * - `start`: dependencies first. Among the modules ready to go, one that is not an ingress goes
 *   before an ingress, and otherwise the order of the file wins (what an operator expects to
 *   read in the start-up log). So the modules that bring outside input onto the bus (MQTT
 *   uplinks, HTTP and gRPC calls) start after the modules that answer it, whatever the order of
 *   the keys in config.yml.
 * - `stop`: exactly the reverse, so an ingress stops (and drains what it took) while the modules
 *   answering it still run.
 *
 * A cycle of any kind, hard or soft, a self-dependency included, is refused with
 * HOST_ERR_DEPENDENCY naming it: breaking it at whichever key came first would make the order
 * hang on the order of keys (test/regressions/bridge-starts-after-consumers).
 *
 * @example
 *   const g = ModuleGraph.build([
 *     ['bridge', { requires: [], after: ['broker'], ingress: true }],
 *     ['broker', { requires: [], after: [] }],
 *   ]);
 *   g.start; // ['broker', 'bridge']
 */
export class ModuleGraph {
  /** Start order. */
  readonly start: readonly string[];
  /** Stop order: the reverse of `start`. */
  readonly stop: readonly string[];
  /** Each module's dependencies that are in the graph. */
  private readonly edges: ReadonlyMap<string, readonly string[]>;

  private constructor(edges: Map<string, string[]>, ingress: ReadonlySet<string>) {
    this.edges = edges;
    this.start = Object.freeze(startOrder(edges, ingress));
    this.stop = Object.freeze([...this.start].reverse());
  }

  /** `nodes` in file order. Throws HOST_ERR_DEPENDENCY for a missing `requires` or a cycle. */
  static build(nodes: Iterable<readonly [string, GraphNode]>): ModuleGraph {
    const list = [...nodes];
    const names = new Set(list.map(([name]) => name));
    const edges = new Map<string, string[]>();
    const ingress = new Set<string>();
    for (const [name, node] of list) {
      for (const dep of node.requires) {
        if (!names.has(dep))
          throw new HubError('HOST_ERR_DEPENDENCY', `modules.${name}.depends_on: ${dep} is not an enabled module`, {
            path: `modules.${name}.depends_on`,
            module: name,
            dependency: dep,
          });
      }
      edges.set(name, [...new Set([...node.requires, ...node.after.filter((d) => names.has(d))])]);
      if (node.ingress) ingress.add(name);
    }
    refuseCycles(edges);
    return new ModuleGraph(edges, ingress);
  }
}

/** Depth-first from each module in file order; the first cycle met is named from where it closes. */
function refuseCycles(edges: ReadonlyMap<string, readonly string[]>): void {
  const state = new Map<string, 'visiting' | 'done'>();
  const trail: string[] = [];
  const visit = (n: string): void => {
    if (state.get(n) === 'done') return;
    if (state.get(n) === 'visiting') {
      const cycle = [...trail.slice(trail.indexOf(n)), n];
      throw new HubError('HOST_ERR_DEPENDENCY', `dependency cycle ${cycle.join(' -> ')}`, {
        path: `modules.${cycle[0]}.depends_on`,
        cycle,
      });
    }
    state.set(n, 'visiting');
    trail.push(n);
    for (const d of edges.get(n)!) visit(d);
    trail.pop();
    state.set(n, 'done');
  };
  for (const n of edges.keys()) visit(n);
}

/** Takes, again and again, the first ready module in file order, preferring one that is not an ingress. */
function startOrder(edges: ReadonlyMap<string, readonly string[]>, ingress: ReadonlySet<string>): string[] {
  const names = [...edges.keys()];
  const placed = new Set<string>();
  const order: string[] = [];
  const ready = (n: string) => !placed.has(n) && edges.get(n)!.every((d) => placed.has(d));
  while (order.length < names.length) {
    // refuseCycles ran first: some module is always ready
    const next = names.find((n) => ready(n) && !ingress.has(n)) ?? names.find(ready)!;
    placed.add(next);
    order.push(next);
  }
  return order;
}
