/**
 * One function per call the panel makes to the data access API. `poll: true` marks background
 * refreshes with `no_track_activity=1`, so they do not keep an idle server alive.
 */
import {
  IAccessRequest,
  ICollection,
  IDataset,
  IDatasetDetails,
  IDatasetQuery,
  IGrant,
  IGrantQuery,
  IMe,
  INotifications,
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
  me: (poll?: boolean): Promise<IMe> => requestAPI<IMe>(withQuery('me', polled(poll))),

  datasets: (query: IDatasetQuery, poll?: boolean): Promise<ICollection<IDataset>> =>
    requestAPI(withQuery('datasets', { limit: PAGE_SIZE, offset: 0, ...query, ...polled(poll) })),

  dataset: (id: string, poll?: boolean): Promise<IDatasetDetails> =>
    requestAPI(withQuery(`datasets/${seg(id)}`, polled(poll))),

  preview: (id: string, limit = 20): Promise<IPreview> =>
    requestAPI(withQuery(`datasets/${seg(id)}/preview`, { limit })),

  createRequest: (dataset: string, justification: string, days: number): Promise<IAccessRequest> =>
    postJSON('requests', { dataset, justification, days }),

  /** My requests (the server's token asks for no one else's). */
  requests: (
    query: { status?: RequestStatus; dataset?: string } = {},
    poll?: boolean
  ): Promise<ICollection<IAccessRequest>> =>
    requestAPI(withQuery('requests', { scope: 'mine', limit: 200, ...query, ...polled(poll) })),

  withdraw: (id: number | string): Promise<IAccessRequest> =>
    postJSON(`requests/${seg(String(id))}/withdraw`, {}),

  /** Renew an approved request: a new request for the same dataset (`days` absent: as before). */
  renew: (id: number | string, days?: number): Promise<IAccessRequest> =>
    postJSON(`requests/${seg(String(id))}/renew`, days === undefined ? {} : { days }),

  /** My grants (active ones unless the query says otherwise). */
  grants: (query: IGrantQuery = { active: 'true' }, poll?: boolean): Promise<ICollection<IGrant>> =>
    requestAPI(withQuery('grants', { limit: 200, ...query, ...polled(poll) })),

  /** What changed for me after audit record `since` (SINCE_NOW: nothing yet, only `last_seq`). */
  notifications: (since: number, poll?: boolean): Promise<INotifications> =>
    requestAPI(withQuery('notifications', { since, limit: 200, ...polled(poll) }))
};

export type DataAccessAPI = typeof api;
