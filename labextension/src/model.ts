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

export interface IDatasetDetails extends IDataset {
  columns?: IColumn[];
  schema?: IColumn[] | { columns?: IColumn[] };
  /** The number of rows a reader gets (after the row filter); null when unknown. */
  rows?: number | null;
  updated_at?: string | null;
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
  classification?: string;
  status?: string;
  limit?: number;
  offset?: number;
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
