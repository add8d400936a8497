/**
 * The one permission table of the interfaces (REST, WebSocket, gRPC). Every operation declares,
 * where it is declared, the action it needs: a REST route its `access`, a gRPC method its entry
 * in the service, the WebSocket its upgrade route. A token's role grants actions; its `projects`
 * (if any) limit which projects it sees and acts on. An operation without a declaration fails the
 * module's start (`assertDeclared`), so no new operation can go unguarded.
 *
 *   action    needed by                                  viewer  operator  admin
 *   read      every GET, the live feeds, /metrics          yes     yes      yes
 *   operate   send, sync, cancel, replay a dead command     -      yes      yes
 *   admin     projects (create, disable, enable, rotate),   -       -       yes
 *             modules (restart), the outbox (dead events)
 */
import { HubError } from '../../../core/errors.js';
import type { ProjectScope } from '../project-scope.js';

/** What an operation does, as far as permission goes. */
export type Action = 'read' | 'operate' | 'admin';
/** A token's role. Plain-string tokens are `admin` (as every token was before roles). */
export type Role = 'viewer' | 'operator' | 'admin';
/** Who may call an operation: anyone (`public`, health probes), or a token whose role grants the action. */
export type Access = 'public' | Action;

export const ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];
export const ACCESS_VALUES: readonly Access[] = ['public', 'read', 'operate', 'admin'];

/** role → the actions it grants: the whole table. */
const GRANTS: Readonly<Record<Role, ReadonlySet<Action>>> = {
  viewer: new Set<Action>(['read']),
  operator: new Set<Action>(['read', 'operate']),
  admin: new Set<Action>(['read', 'operate', 'admin']),
};

/** The subject of a permission decision (a Principal; kept structural so tests can pass plain objects). */
export interface Grantee {
  readonly token_id: string;
  readonly role: Role;
  /** null: every project. */
  readonly projects: ProjectScope | null;
}

export function isAccess(v: unknown): v is Access {
  return typeof v === 'string' && (ACCESS_VALUES as readonly string[]).includes(v);
}

/** Whether the role grants the action (`public` needs nothing). */
export function grants(role: Role, access: Access): boolean {
  return access === 'public' || GRANTS[role].has(access);
}

/** The refusal of an action the role does not grant: 403 / PERMISSION_DENIED, AUTH_ERR_FORBIDDEN. */
export function forbiddenAction(who: Grantee, access: Access, operation: string): HubError {
  return new HubError(
    'AUTH_ERR_FORBIDDEN',
    `token ${who.token_id} (role ${who.role}) may not ${operation}: it needs the ${access} action (${rolesFor(access)})`,
    { token_id: who.token_id, role: who.role, needs: access },
  );
}

/** Roles that grant an action, for messages. */
function rolesFor(access: Access): string {
  return `role ${ROLES.filter((r) => grants(r, access)).join(' or ')}`;
}

/** Throws AUTH_ERR_FORBIDDEN unless the role grants the operation's action. */
export function requireAction(who: Grantee, access: Access, operation: string): void {
  if (!grants(who.role, access)) throw forbiddenAction(who, access, operation);
}

/** Whether the principal may see and act on a project. */
export function seesProject(who: Grantee, projectId: string): boolean {
  return who.projects === null || who.projects.allows(projectId);
}

/**
 * Throws AUTH_ERR_FORBIDDEN unless the principal's `projects` include the project. Single reads of
 * a project or command outside them answer this too (403, not 404), so a caller can tell "not
 * yours" from a typo only by asking with a token that may see it.
 */
export function requireProject(who: Grantee, projectId: string): void {
  if (!seesProject(who, projectId)) {
    throw new HubError('AUTH_ERR_FORBIDDEN', `token ${who.token_id} may not access project ${projectId}`, {
      token_id: who.token_id,
      project_id: projectId,
    });
  }
}

/**
 * Creating a project: a token limited to some projects must name the new one's id, and it must be
 * one of them (a generated id would be another project it then could not see).
 */
export function requireNewProject(who: Grantee, projectId: string | undefined): void {
  if (who.projects === null) return;
  if (projectId === undefined) {
    throw new HubError(
      'AUTH_ERR_FORBIDDEN',
      `token ${who.token_id} is limited to projects ${who.projects.patterns.join(', ')}: name the new project's project_id`,
      { token_id: who.token_id },
    );
  }
  requireProject(who, projectId);
}

/**
 * Throws AUTH_ERR_FORBIDDEN for a token limited to some projects: the operation is about the whole
 * hub (the outbox of every domain, restarting a module), which a limited token never reaches.
 */
export function requireWholeHub(who: Grantee, operation: string): void {
  if (who.projects !== null) {
    throw new HubError(
      'AUTH_ERR_FORBIDDEN',
      `token ${who.token_id} is limited to projects ${who.projects.patterns.join(', ')}: it may not ${operation}`,
      { token_id: who.token_id },
    );
  }
}

/** The `project_patterns` a list request carries for this principal (none: every project). */
export function listScope(who: Grantee): { project_patterns?: string[] } {
  return who.projects === null ? {} : { project_patterns: [...who.projects.patterns] };
}

/**
 * Startup check: every operation of an interface has a valid declaration. Throws (the module then
 * fails to start, naming the operations) when one is missing or not one of ACCESS_VALUES.
 *
 * @example
 *   assertDeclared('grpc', Object.keys(service), (m) => declared.get(m));
 */
export function assertDeclared(
  iface: string,
  operations: Iterable<string>,
  accessOf: (operation: string) => unknown,
): void {
  const missing = [...operations].filter((op) => !isAccess(accessOf(op)));
  if (missing.length > 0) {
    throw new HubError(
      'AUTH_ERR_UNDECLARED',
      `${iface}: operations without an access declaration (one of ${ACCESS_VALUES.join(', ')}): ${missing.join(', ')}`,
      { operations: missing },
    );
  }
}
