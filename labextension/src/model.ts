/**
 * Shapes of the data access REST API (see DESIGN.md) and small pure helpers over them.
 * No imports: the React components and the tests use this without JupyterLab.
 */

export type Classification = 'public' | 'internal' | 'confidential' | 'restricted';
export type AccessStatus = 'granted' | 'pending' | 'none' | 'denied' | 'expired' | 'revoked';
export type RequestStatus = 'pending' | 'approved' | 'denied' | 'withdrawn';
export type GrantStatus = 'active' | 'revoked' | 'expired';

export const CLASSIFICATIONS: Classification[] = ['public', 'internal', 'confidential', 'restricted'];
export const ACCESS_STATUSES: AccessStatus[] = [
  'granted',
  'pending',
  'none',
  'denied',
  'expired',
  'revoked'
];
export const PAGE_SIZE = 50;

export interface ICollection<T> {
  items: T[];
  total: number;
}

export interface IMe {
  name: string;
  groups: string[];
  capabilities: string[];
  admin: boolean;
}

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
  mask?: string | null;
}

/** What policy would decide if the caller asked for a dataset now (`GET datasets/{id}`). */
export interface IRequestPolicy {
  outcome: 'auto' | 'review' | 'deny' | string;
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

export interface IAuditRecord {
  seq?: number;
  sequence?: number;
  time?: string;
  at?: string;
  actor: string;
  action: string;
  dataset?: string | null;
  request_id?: number | string | null;
  grant_id?: number | string | null;
  detail?: unknown;
}

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

/** One rule of `GET policies`; `match` keys as the service names them. */
export interface IPolicyRule {
  match: {
    classification?: string[];
    tags?: string[];
    groups?: string[];
    datasets?: string[];
  };
  decision: 'auto' | 'review' | 'deny' | string;
  approvals?: number;
  max_days: number;
}

export interface IPolicies {
  rules: IPolicyRule[];
  default: { decision: string; approvals?: number; max_days: number };
}

export interface IAuditQuery {
  user?: string;
  dataset?: string;
  action?: string;
  since?: string;
  limit?: number;
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
  return !!me && (me.capabilities.includes('review') || me.admin);
}

export function isAdmin(me: IMe | null): boolean {
  return !!me && (me.capabilities.includes('admin') || me.admin);
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

/** "granted until 12 Mar 2025", "pending", "no access", ... */
export function accessLabel(access: IAccess | undefined): string {
  const status = access?.status ?? 'none';
  if (status === 'granted' && access?.expires_at) {
    return `granted until ${formatDate(access.expires_at)}`;
  }
  return status === 'none' ? 'no access' : status;
}

/** Readable text for any error, for showing in the panel ("No such dataset (404)"). */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const status = (error as { status?: unknown }).status;
    return typeof status === 'number' && status > 0 ? `${error.message} (${status})` : error.message;
  }
  return String(error);
}

/** Audit actions (DESIGN.md), for the audit search. */
export const AUDIT_ACTIONS = [
  'request.create',
  'request.approve',
  'request.deny',
  'request.withdraw',
  'grant.create',
  'grant.revoke',
  'grant.expire',
  'data.read',
  'data.preview',
  'access.denied',
  'spawn.mounts'
];

/** The cell "Load into notebook" inserts and runs. */
export function loadCode(datasetId: string): string {
  return `import jupyterhub_dataaccess as da\ndf = da.load(${JSON.stringify(datasetId)})\ndf`;
}

/** A number of days for people: "30", "0.5", "1.25" (at most two decimals). */
export function daysText(days: number): string {
  return String(Math.round(days * 100) / 100);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** "Needs 2 steward approvals" for a review by `approvals` stewards. */
function reviewHeadline(approvals: number | undefined): string {
  return `Needs ${plural(Math.max(1, approvals ?? 1), 'steward approval')}`;
}

/**
 * The outcome the request dialog shows before sending: "Approved at once — auto-approved: public
 * data", "Needs 2 steward approvals — restricted data", "Policy denies this request — dataset
 * forbidden". The reason's words that only repeat the headline are left out.
 */
export function policyOutcomeText(policy: IRequestPolicy): string {
  const reason = (policy.reason ?? '').trim();
  let headline: string;
  let detail = reason;
  if (policy.outcome === 'auto') {
    headline = 'Approved at once';
  } else if (policy.outcome === 'deny') {
    headline = 'Policy denies this request';
    detail = detail.replace(/^denied by policy\s*:?\s*/i, '');
  } else {
    headline = reviewHeadline(policy.approvals);
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
  if (!Number.isFinite(days) || days <= 0 || !maxDays || !Number.isFinite(maxDays) || maxDays <= 0) {
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

/** "confidential data", "internal data for analysts", "dataset forbidden", "any data". */
export function describeMatch(match: IPolicyRule['match'] | undefined): string {
  const parts: string[] = [];
  const names = (value: string[] | string | undefined): string[] =>
    value === undefined ? [] : Array.isArray(value) ? value : [value];
  const classifications = names(match?.classification);
  const tags = names(match?.tags);
  const groups = names(match?.groups);
  const datasets = names(match?.datasets);
  if (classifications.length) {
    parts.push(`${classifications.join('/')} data`);
  }
  if (tags.length) {
    parts.push(`tagged ${tags.join('/')}`);
  }
  if (groups.length) {
    parts.push(`for ${groups.join('/')}`);
  }
  if (datasets.length) {
    parts.push(`${datasets.length === 1 ? 'dataset' : 'datasets'} ${datasets.join('/')}`);
  }
  return parts.join(', ') || 'any data';
}

/** "approved at once, up to 365 days", "2 steward approvals, up to 7 days", "denied". */
export function describeDecision(rule: {
  decision: string;
  approvals?: number;
  max_days?: number;
}): string {
  const days =
    typeof rule.max_days === 'number'
      ? `, up to ${plural(Number(daysText(rule.max_days)), 'day')}`
      : '';
  if (rule.decision === 'auto') {
    return `approved at once${days}`;
  }
  if (rule.decision === 'deny') {
    return 'denied';
  }
  if (rule.decision === 'review') {
    return `${plural(Math.max(1, rule.approvals ?? 1), 'steward approval')}${days}`;
  }
  return `${rule.decision}${days}`;
}
