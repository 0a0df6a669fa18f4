/**
 * Shapes of the data access REST API (see DESIGN.md) and small pure helpers over them.
 * No JupyterLab imports: the React components and the tests use this without JupyterLab.
 */
import { ITrans, plainTrans } from './i18n';
import type { components, paths } from './openapi';

/** The API's own shapes, generated from jupyterhub_dataaccess/service/openapi.yaml at build time
 * (`npm run api-types`): the spec is the one source of the enums, and a change to it that this
 * code does not follow fails the build. */
type Schemas = components['schemas'];

export type Classification = NonNullable<Schemas['Dataset']['classification']>;
export type AccessStatus = NonNullable<Schemas['Access']['status']>;
export type RequestStatus = NonNullable<Schemas['Request']['status']>;
export type GrantStatus = NonNullable<Schemas['Grant']['status']>;
export type Mask = NonNullable<NonNullable<Schemas['Dataset']['columns']>[number]['mask']>;
export type PolicyOutcome = NonNullable<
  NonNullable<Schemas['Dataset']['request_policy']>['outcome']
>;

/** Each value of a spec enum once, in the order given (the compiler checks none is missing). */
function allOf<T extends string>(values: Record<T, true>): T[] {
  return Object.keys(values) as T[];
}

export const CLASSIFICATIONS = allOf<Classification>({
  public: true,
  internal: true,
  confidential: true,
  restricted: true
});
export const ACCESS_STATUSES = allOf<AccessStatus>({
  granted: true,
  pending: true,
  none: true,
  denied: true,
  expired: true,
  revoked: true
});
export const PAGE_SIZE = 50;

export interface ICollection<T> {
  items: T[];
  total: number;
}

/** `GET /me`. With the server's token, `capabilities` are the token's (browse and request); the
 * read-only `can_review`, `can_admin`, `pending_reviews` and `pages` say what the person may do
 * in the service's own pages, which the panel opens (it never decides itself). */
type MeSpec = paths['/me']['get']['responses'][200]['content']['application/json'];
export type IMe = Required<Pick<MeSpec, 'name' | 'groups' | 'capabilities' | 'admin'>> &
  Pick<MeSpec, 'can_review' | 'can_admin' | 'pending_reviews' | 'pages'>;

/** The service's own pages the panel shows in a main-area tab. */
export type ServicePageName = keyof NonNullable<MeSpec['pages']>;

export interface IAccess {
  status: AccessStatus;
  expires_at?: string | null;
}

export interface IStewards {
  users?: string[];
  groups?: string[];
}

export interface IDataset {
  id: string;
  title: string;
  description: string;
  classification: Classification | string;
  tags: string[];
  owner: string;
  stewards: IStewards;
  access: IAccess;
}

export interface IColumn {
  name: string;
  type: string;
  mask?: Mask | null;
}

/** What policy would decide if the caller asked for a dataset now (`GET datasets/{id}`). */
export interface IRequestPolicy {
  outcome: PolicyOutcome;
  approvals: number;
  max_days: number;
  reason: string;
}

export interface IDatasetDetails extends IDataset {
  columns?: IColumn[];
  schema?: IColumn[] | { columns?: IColumn[] };
  /** The number of rows a reader gets (after the row filter); null when unknown. */
  rows?: number | null;
  updated_at?: string | null;
  /** The version a read gets now (snapshot id, Delta version, file digest), when the source has one. */
  version?: string | null;
  /** Set when the source could not be read for the schema. */
  source_error?: string;
  request_policy?: IRequestPolicy | null;
}

export interface IPreview {
  /** The service sends column objects (name, type, mask); plain names are accepted too. */
  columns: (string | IColumn)[];
  rows: unknown[][] | Record<string, unknown>[];
}

export interface IDecision {
  by: string;
  decision: string;
  comment: string | null;
  at: string;
}

export interface IAccessRequest {
  id: number | string;
  dataset: string;
  user: string;
  justification: string;
  days: number;
  status: RequestStatus;
  reason: string | null;
  approvals_required?: number;
  created_at: string;
  decisions: IDecision[];
}

export interface IGrant {
  id: number | string;
  dataset: string;
  user: string;
  request_id: number | string | null;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  status: GrantStatus;
}

/** One change for me (`GET notifications`): a decision on my request, a change to my grant. */
export interface INotification {
  seq: number;
  at: string;
  action: string;
  dataset: string;
  request_id: number | null;
  grant_id: number | null;
  actor: string;
  user: string;
  message: string;
}

export interface INotifications extends ICollection<INotification> {
  /** Ask with `since=last_seq` next time. */
  last_seq: number;
}

/** The largest sequence number: asking for what came after it answers only `last_seq`. */
export const SINCE_NOW = 2 ** 31 - 1;

export interface IDatasetQuery {
  q?: string;
  tag?: string;
  classification?: string;
  status?: string;
  limit?: number;
  offset?: number;
}

export interface IGrantQuery {
  user?: string;
  dataset?: string;
  /** 'true': only active grants; 'false': only revoked and expired ones; '' or absent: all. */
  active?: 'true' | 'false' | '';
}

/** The columns of a dataset, whichever of the documented shapes the service used. */
export function columnsOf(details: IDatasetDetails): IColumn[] {
  if (Array.isArray(details.columns)) {
    return details.columns;
  }
  if (Array.isArray(details.schema)) {
    return details.schema;
  }
  if (details.schema && Array.isArray(details.schema.columns)) {
    return details.schema.columns;
  }
  return [];
}

/** The column names of a preview, in order. */
export function previewColumns(preview: IPreview): string[] {
  return (preview.columns ?? []).map(column => (typeof column === 'string' ? column : column.name));
}

/** Rows of a preview as arrays in the order of `columns`. */
export function previewRows(preview: IPreview): unknown[][] {
  const names = previewColumns(preview);
  return (preview.rows ?? []).map(row =>
    Array.isArray(row) ? row : names.map(name => (row as Record<string, unknown>)[name])
  );
}

export function isReviewer(me: IMe | null): boolean {
  return !!me && (me.can_review ?? (me.capabilities.includes('review') || me.admin));
}

export function isAdmin(me: IMe | null): boolean {
  return !!me && (me.can_admin ?? (me.capabilities.includes('admin') || me.admin));
}

/** Access statuses from which the user may ask (again). */
export function canRequest(status: AccessStatus | undefined): boolean {
  return (
    status === undefined ||
    status === 'none' ||
    status === 'denied' ||
    status === 'expired' ||
    status === 'revoked'
  );
}

/** A date for people ("12 Mar 2025"); the input unchanged when it is not a date. */
export function formatDate(value: string | null | undefined, withTime = false): string {
  if (!value) {
    return '';
  }
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) {
    return value;
  }
  return withTime ? date.toLocaleString() : date.toLocaleDateString();
}

/** Readable text for any error, for showing in the panel ("No such dataset (404)"). */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const status = (error as { status?: unknown }).status;
    return typeof status === 'number' && status > 0
      ? `${error.message} (${status})`
      : error.message;
  }
  return String(error);
}

/** The cell "Load into notebook" inserts and runs. */
export function loadCode(datasetId: string): string {
  return `import jupyterhub_dataaccess as da\ndf = da.load(${JSON.stringify(datasetId)})\ndf`;
}

/** A dataset id as a DuckDB table name: quoted unless it is a plain identifier. */
export function sqlTable(datasetId: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(datasetId) ? datasetId : `"${datasetId.replace(/"/g, '""')}"`;
}

/** The `da.sql` snippet the dataset page offers. */
export function sqlCode(datasetId: string): string {
  const sql = `SELECT * FROM ${sqlTable(datasetId)} LIMIT 100`;
  const literal = /['\\\n]/.test(sql) ? JSON.stringify(sql) : `'${sql}'`;
  return `import jupyterhub_dataaccess as da\ndf = da.sql(${literal})\ndf`;
}

/** A number of days for people: "30", "0.5", "1.25" (at most two decimals). */
export function daysText(days: number): string {
  return String(Math.round(days * 100) / 100);
}

/**
 * The outcome the request dialog shows before sending: "Approved at once — auto-approved: public
 * data", "Needs 2 steward approvals — restricted data", "Policy denies this request — dataset
 * forbidden". The reason's words that only repeat the headline are left out.
 */
export function policyOutcomeText(policy: IRequestPolicy, trans: ITrans = plainTrans): string {
  const reason = (policy.reason ?? '').trim();
  let headline: string;
  let detail = reason;
  if (policy.outcome === 'auto') {
    headline = trans.__('Approved at once');
  } else if (policy.outcome === 'deny') {
    headline = trans.__('Policy denies this request');
    detail = detail.replace(/^denied by policy\s*:?\s*/i, '');
  } else {
    headline = trans._n(
      'Needs %1 steward approval',
      'Needs %1 steward approvals',
      Math.max(1, policy.approvals ?? 1)
    );
    detail = detail.replace(/^needs \d+ steward approvals?\s*:?\s*/i, '');
  }
  const unwrapped = /^\((.*)\)$/.exec(detail);
  if (unwrapped) {
    detail = unwrapped[1];
  }
  return detail ? `${headline} — ${detail}` : headline;
}

/** The days a request may ask for, capped at the policy's maximum (NaN and ≤ 0 left as they are). */
export function clampDays(days: number, maxDays: number | null | undefined): number {
  if (
    !Number.isFinite(days) ||
    days <= 0 ||
    !maxDays ||
    !Number.isFinite(maxDays) ||
    maxDays <= 0
  ) {
    return days;
  }
  return Math.min(days, maxDays);
}

/** The tags of `datasets` added to `known`: unique and sorted; `known` unchanged if nothing is new. */
export function mergeTags(known: string[], datasets: IDataset[]): string[] {
  const all = new Set(known);
  for (const dataset of datasets) {
    for (const tag of dataset.tags ?? []) {
      if (typeof tag === 'string' && tag !== '') {
        all.add(tag);
      }
    }
  }
  if (all.size === known.length) {
    return known;
  }
  return Array.from(all).sort((a, b) => a.localeCompare(b));
}

/** The grants of `grants` by the id of the request that created them. */
export function grantsByRequest(grants: IGrant[]): Map<string, IGrant> {
  const out = new Map<string, IGrant>();
  for (const grant of grants) {
    if (grant.request_id !== null && grant.request_id !== undefined) {
      out.set(String(grant.request_id), grant);
    }
  }
  return out;
}

/**
 * The ids of my requests that offer "Renew": per dataset, the newest approved request, when its
 * grant is active or expired (not revoked) and no request for that dataset is pending.
 * `requests` are newest first, as the service lists them.
 */
export function renewableRequestIds(requests: IAccessRequest[], grants: IGrant[]): Set<string> {
  const byRequest = grantsByRequest(grants);
  const pending = new Set(requests.filter(r => r.status === 'pending').map(r => r.dataset));
  const seen = new Set<string>();
  const out = new Set<string>();
  for (const request of requests) {
    if (request.status !== 'approved' || seen.has(request.dataset)) {
      continue;
    }
    seen.add(request.dataset);
    const grant = byRequest.get(String(request.id));
    if (
      grant &&
      (grant.status === 'active' || grant.status === 'expired') &&
      !pending.has(request.dataset)
    ) {
      out.add(String(request.id));
    }
  }
  return out;
}
