/** gRPC messages of GetProjectHistory and ListAudit to bus requests, and the audit page back. */
import type { AuditPage, ListAuditRequest } from '../audit/contract/topics.js';
import type { PresenceHistoryRequest } from '../status/contract/history-topics.js';
import { checkProjectId } from './convert.js';

/** As proto-loader hands them over: unset `optional` fields are absent, strings empty. */
export interface HistoryMsg {
  project_id: string;
  since: string;
  until: string;
  limit?: number;
  offset?: number;
}

export interface ListAuditMsg {
  action: string;
  project_id: string;
  token_id: string;
  since: string;
  until: string;
  limit?: number;
  offset?: number;
}

const paging = (m: { limit?: number; offset?: number }) => ({
  ...(m.limit !== undefined ? { limit: m.limit } : {}),
  ...(m.offset !== undefined ? { offset: m.offset } : {}),
});

export function toHistoryRequest(m: HistoryMsg): PresenceHistoryRequest {
  return {
    project_id: checkProjectId('project_id', m.project_id),
    ...(m.since !== '' ? { since: m.since } : {}),
    ...(m.until !== '' ? { until: m.until } : {}),
    ...paging(m),
  };
}

export function toListAudit(m: ListAuditMsg): ListAuditRequest {
  return {
    ...(m.action !== '' ? { action: m.action } : {}),
    ...(m.project_id !== '' ? { project_id: checkProjectId('project_id', m.project_id) } : {}),
    ...(m.token_id !== '' ? { token_id: m.token_id } : {}),
    ...(m.since !== '' ? { since: m.since } : {}),
    ...(m.until !== '' ? { until: m.until } : {}),
    ...paging(m),
  };
}

/** A null project_id is an unset `optional` field. */
export function auditPage(p: AuditPage): unknown {
  return {
    ...p,
    items: p.items.map(({ project_id, ...rest }) => (project_id === null ? rest : { ...rest, project_id })),
  };
}
