/**
 * Checks real responses against the hub's own /openapi.json: the status must be one the
 * operation lists, and a JSON body must validate (ajv, JSON Schema 2020-12, as OpenAPI 3.1
 * uses) against the schema documented for that status. Used by the OpenAPI test and the fuzzer.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';

// biome-ignore lint/suspicious/noExplicitAny: the OpenAPI document is read as plain JSON
type Doc = any;

export interface Operation {
  method: string;
  /** The documented path, e.g. `/api/exchange-hub/project/{project_id}/status`. */
  path: string;
  operationId: string;
  /** False when the operation declares `security: []` (answers without the token). */
  secured: boolean;
  parameters: Array<{ name: string; in: 'path' | 'query'; required: boolean; schema: Doc }>;
  requestBody: { required: boolean; schema: Doc } | null;
  /** Documented statuses → their JSON schema pointer (null: no JSON body documented). */
  responses: Map<number, { json: string | null; contentTypes: string[] }>;
  /** Matches a concrete (already decoded) path. */
  pattern: RegExp;
}

const pointer = (...parts: string[]) =>
  `#/${parts.map((p) => encodeURIComponent(p.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/')}`;

const segmentPattern = (seg: string) =>
  /^\{[^}]+\}$/.test(seg) ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export class OpenApiOracle {
  readonly operations: Operation[] = [];
  readonly errorSchema: ValidateFunction;
  private readonly ajv: Ajv2020;
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(readonly doc: Doc) {
    // strict: false: OpenAPI annotations (description, example …) are not JSON Schema keywords ajv knows
    this.ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: false });
    this.ajv.addSchema(doc, 'openapi.json');
    const globalSecured = Array.isArray(doc.security) && doc.security.length > 0;
    for (const [path, item] of Object.entries<Doc>(doc.paths)) {
      for (const [method, op] of Object.entries<Doc>(item)) {
        const responses = new Map<number, { json: string | null; contentTypes: string[] }>();
        for (const [status, r] of Object.entries<Doc>(op.responses ?? {})) {
          const content = r.content ?? {};
          responses.set(Number(status), {
            json: content['application/json']
              ? pointer('paths', path, method, 'responses', status, 'content', 'application/json', 'schema')
              : null,
            contentTypes: Object.keys(content),
          });
        }
        const rb = op.requestBody;
        this.operations.push({
          method: method.toUpperCase(),
          path,
          operationId: op.operationId,
          secured: op.security ? op.security.length > 0 : globalSecured,
          parameters: op.parameters ?? [],
          requestBody: rb ? { required: rb.required === true, schema: rb.content['application/json'].schema } : null,
          responses,
          pattern: new RegExp(`^${path.split('/').map(segmentPattern).join('/')}$`),
        });
      }
    }
    this.errorSchema = this.ajv.compile({ $ref: 'openapi.json#/components/schemas/Error' });
  }

  /** The operation a plain path names (no percent tricks), or null. */
  match(method: string, path: string): Operation | null {
    const p = path.split('?')[0];
    // a concrete path wins over a templated one (`/commands/dead` over `/command/{id}`)
    const hits = this.operations.filter((o) => o.method === method && o.pattern.test(p));
    return hits.find((o) => !o.path.includes('{')) ?? hits[0] ?? null;
  }

  /** A resolved JSON schema (components inlined by ref), e.g. for a request body generator. */
  resolve(schema: Doc): Doc {
    if (schema && typeof schema.$ref === 'string') {
      const name = schema.$ref.replace('#/components/schemas/', '');
      return this.doc.components.schemas[name];
    }
    return schema;
  }

  /**
   * Why a response does not match the operation's documentation, or null when it does:
   * the status must be listed; a documented JSON body must be JSON and valid against its schema.
   */
  check(op: Operation, status: number, contentType: string | undefined, body: string): string | null {
    const doc = op.responses.get(status);
    if (!doc) return `${op.method} ${op.path}: status ${status} is not documented (${[...op.responses.keys()]})`;
    if (!doc.json) return null;
    if (!contentType?.startsWith('application/json')) {
      return `${op.method} ${op.path} ${status}: content-type ${contentType}, documented application/json`;
    }
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch {
      return `${op.method} ${op.path} ${status}: body is not JSON`;
    }
    const v = this.validator(doc.json);
    if (v(value)) return null;
    return `${op.method} ${op.path} ${status}: ${this.ajv.errorsText(v.errors, { separator: '; ' })}`;
  }

  /** Why a body is not the documented error shape `{error:{code,message,field?}}`, or null. */
  checkError(contentType: string | undefined, body: string): string | null {
    if (!contentType?.startsWith('application/json')) return `error with content-type ${contentType}`;
    let value: unknown;
    try {
      value = JSON.parse(body);
    } catch {
      return 'error body is not JSON';
    }
    return this.errorSchema(value) ? null : `error body: ${this.ajv.errorsText(this.errorSchema.errors)}`;
  }

  private validator(ref: string): ValidateFunction {
    let v = this.compiled.get(ref);
    if (!v) {
      v = this.ajv.compile({ $ref: `openapi.json${ref}` });
      this.compiled.set(ref, v);
    }
    return v;
  }
}
