/**
 * One function per call the panel makes to the data access API. `poll: true` marks background
 * refreshes with `no_track_activity=1`, so they do not keep an idle server alive.
 */
import {
  IAccessRequest,
  IAuditQuery,
  IAuditRecord,
  ICollection,
  IDataset,
  IDatasetDetails,
  IDatasetQuery,
  IGrant,
  IGrantQuery,
  IMe,
  IPolicies,
  IPreview,
  PAGE_SIZE,
  RequestStatus
} from './model';
import { requestAPI, withQuery } from './request';

const POLL = { no_track_activity: 1 };

function polled(poll?: boolean): Record<string, number> {
  return poll ? POLL : {};
}

const seg = encodeURIComponent;

function postJSON<T>(path: string, body?: unknown): Promise<T> {
  return requestAPI<T>(path, {
    method: 'POST',
    body: body === undefined ? undefined : JSON.stringify(body)
  });
}

export const api = {
  me: (): Promise<IMe> => requestAPI<IMe>('me'),

  datasets: (query: IDatasetQuery, poll?: boolean): Promise<ICollection<IDataset>> =>
    requestAPI(withQuery('datasets', { limit: PAGE_SIZE, offset: 0, ...query, ...polled(poll) })),

  dataset: (id: string, poll?: boolean): Promise<IDatasetDetails> =>
    requestAPI(withQuery(`datasets/${seg(id)}`, polled(poll))),

  preview: (id: string, limit = 20): Promise<IPreview> =>
    requestAPI(withQuery(`datasets/${seg(id)}/preview`, { limit })),

  createRequest: (dataset: string, justification: string, days: number): Promise<IAccessRequest> =>
    postJSON('requests', { dataset, justification, days }),

  requests: (
    scope: 'mine' | 'review',
    status?: RequestStatus,
    poll?: boolean
  ): Promise<ICollection<IAccessRequest>> =>
    requestAPI(withQuery('requests', { scope, status, limit: 200, ...polled(poll) })),

  request: (id: number | string, poll?: boolean): Promise<IAccessRequest> =>
    requestAPI(withQuery(`requests/${seg(String(id))}`, polled(poll))),

  withdraw: (id: number | string): Promise<IAccessRequest> =>
    postJSON(`requests/${seg(String(id))}/withdraw`, {}),

  decide: (
    id: number | string,
    decision: 'approve' | 'deny',
    comment: string
  ): Promise<IAccessRequest> => postJSON(`requests/${seg(String(id))}/${decision}`, { comment }),

  /** Renew an approved request: a new request for the same dataset (`days` absent: as before). */
  renew: (id: number | string, days?: number): Promise<IAccessRequest> =>
    postJSON(`requests/${seg(String(id))}/renew`, days === undefined ? {} : { days }),

  /** Grants (active ones unless the query says otherwise). */
  grants: (query: IGrantQuery = { active: 'true' }, poll?: boolean): Promise<ICollection<IGrant>> =>
    requestAPI(withQuery('grants', { limit: 200, ...query, ...polled(poll) })),

  policies: (poll?: boolean): Promise<IPolicies> => requestAPI(withQuery('policies', polled(poll))),

  revoke: (id: number | string): Promise<IGrant | null> =>
    requestAPI(`grants/${seg(String(id))}`, { method: 'DELETE' }),

  audit: (query: IAuditQuery, poll?: boolean): Promise<ICollection<IAuditRecord>> =>
    requestAPI(withQuery('audit', { limit: 100, ...query, ...polled(poll) }))
};

export type DataAccessAPI = typeof api;
