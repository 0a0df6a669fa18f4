/**
 * Presentational React components of the panel. Every string that comes from users or the service
 * (titles, descriptions, justifications, comments) is rendered as a React text node, never as HTML.
 */
import * as React from 'react';

import {
  accessLabel,
  canRequest,
  columnsOf,
  describeDecision,
  describeMatch,
  formatDate,
  IAccessRequest,
  IAuditRecord,
  IDataset,
  IDatasetDetails,
  IGrant,
  IPolicies,
  IPreview,
  previewColumns,
  previewRows
} from './model';

export function ErrorText({ error }: { error: string | null }): JSX.Element | null {
  return error ? (
    <div className="jp-DataAccess-error" role="alert">
      {error}
    </div>
  ) : null;
}

export function InfoText({ text }: { text: string | null }): JSX.Element | null {
  return text ? (
    <div className="jp-DataAccess-info" role="status">
      {text}
    </div>
  ) : null;
}

export function ClassificationBadge({ value }: { value: string }): JSX.Element {
  return (
    <span className={`jp-DataAccess-badge jp-DataAccess-classification jp-mod-${cssToken(value)}`}>
      {value}
    </span>
  );
}

export function StatusBadge({ status, label }: { status: string; label?: string }): JSX.Element {
  return (
    <span className={`jp-DataAccess-badge jp-DataAccess-status jp-mod-${cssToken(status)}`}>
      {label ?? status}
    </span>
  );
}

export function Button(props: {
  label: string;
  onClick: () => void;
  accept?: boolean;
  warn?: boolean;
  disabled?: boolean;
  title?: string;
}): JSX.Element {
  const kind = props.warn ? 'jp-mod-warn' : props.accept ? 'jp-mod-accept' : 'jp-mod-reject';
  return (
    <button
      type="button"
      className={`jp-Button jp-mod-styled ${kind} jp-DataAccess-button`}
      onClick={event => {
        event.stopPropagation();
        props.onClick();
      }}
      disabled={props.disabled}
      title={props.title}
    >
      {props.label}
    </button>
  );
}

export interface IDatasetRowProps {
  dataset: IDataset;
  selected?: boolean;
  onOpen: (dataset: IDataset) => void;
  onRequest: (dataset: IDataset) => void;
  onLoad: (dataset: IDataset) => void;
}

export function DatasetActions(props: {
  dataset: IDataset;
  onRequest: (dataset: IDataset) => void;
  onLoad: (dataset: IDataset) => void;
}): JSX.Element | null {
  const status = props.dataset.access?.status ?? 'none';
  if (status === 'granted') {
    return <Button label="Load into notebook" accept onClick={() => props.onLoad(props.dataset)} />;
  }
  if (canRequest(status)) {
    return <Button label="Request access" accept onClick={() => props.onRequest(props.dataset)} />;
  }
  return null;
}

export function DatasetRow(props: IDatasetRowProps): JSX.Element {
  const { dataset } = props;
  const status = dataset.access?.status ?? 'none';
  return (
    <li
      className={`jp-DataAccess-row${props.selected ? ' jp-mod-selected' : ''}`}
      data-dataset-id={dataset.id}
    >
      <div
        className="jp-DataAccess-rowMain"
        role="button"
        tabIndex={0}
        title="Show details"
        onClick={() => props.onOpen(dataset)}
        onKeyDown={event => {
          if (event.key === 'Enter' || event.key === ' ') {
            event.preventDefault();
            props.onOpen(dataset);
          }
        }}
      >
        <span className="jp-DataAccess-title">{dataset.title || dataset.id}</span>
        <span className="jp-DataAccess-badges">
          <ClassificationBadge value={String(dataset.classification)} />
          <StatusBadge status={status} label={accessLabel(dataset.access)} />
        </span>
      </div>
      <div className="jp-DataAccess-rowActions">
        <DatasetActions dataset={dataset} onRequest={props.onRequest} onLoad={props.onLoad} />
      </div>
    </li>
  );
}

function stewardsText(dataset: IDataset): string {
  const users = dataset.stewards?.users ?? [];
  const groups = (dataset.stewards?.groups ?? []).map(group => `group ${group}`);
  return [...users, ...groups].join(', ') || '—';
}

export function DatasetDetailsView(props: {
  details: IDatasetDetails;
  preview: IPreview | null;
  previewError: string | null;
  onRequest: (dataset: IDataset) => void;
  onLoad: (dataset: IDataset) => void;
}): JSX.Element {
  const { details } = props;
  const columns = columnsOf(details);
  return (
    <div className="jp-DataAccess-details">
      <h3 className="jp-DataAccess-detailsTitle">{details.title || details.id}</h3>
      <div className="jp-DataAccess-badges">
        <ClassificationBadge value={String(details.classification)} />
        <StatusBadge status={details.access?.status ?? 'none'} label={accessLabel(details.access)} />
      </div>
      <p className="jp-DataAccess-description">{details.description}</p>
      <dl className="jp-DataAccess-facts">
        <dt>Id</dt>
        <dd>
          <code>{details.id}</code>
        </dd>
        <dt>Owner</dt>
        <dd>{details.owner || '—'}</dd>
        <dt>Stewards</dt>
        <dd>{stewardsText(details)}</dd>
        {details.tags?.length ? (
          <>
            <dt>Tags</dt>
            <dd>{details.tags.join(', ')}</dd>
          </>
        ) : null}
        {typeof details.rows === 'number' ? (
          <>
            <dt>Rows</dt>
            <dd>{details.rows.toLocaleString()}</dd>
          </>
        ) : null}
        {details.updated_at ? (
          <>
            <dt>Updated</dt>
            <dd>{formatDate(details.updated_at, true)}</dd>
          </>
        ) : null}
      </dl>
      <div className="jp-DataAccess-rowActions">
        <DatasetActions dataset={details} onRequest={props.onRequest} onLoad={props.onLoad} />
      </div>
      {columns.length > 0 ? (
        <table className="jp-DataAccess-table jp-DataAccess-schema">
          <caption>Schema</caption>
          <thead>
            <tr>
              <th scope="col">Column</th>
              <th scope="col">Type</th>
            </tr>
          </thead>
          <tbody>
            {columns.map(column => (
              <tr key={column.name}>
                <td>{column.name}</td>
                <td>
                  {column.type}
                  {column.mask ? ` (masked: ${column.mask})` : ''}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <ErrorText error={props.previewError} />
      {props.preview ? <PreviewTable preview={props.preview} /> : null}
    </div>
  );
}

function cellText(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

export function PreviewTable({ preview }: { preview: IPreview }): JSX.Element {
  const rows = previewRows(preview);
  return (
    <div className="jp-DataAccess-previewWrap">
      <table className="jp-DataAccess-table jp-DataAccess-preview">
        <caption>Preview (first {rows.length} rows)</caption>
        <thead>
          <tr>
            {previewColumns(preview).map(column => (
              <th scope="col" key={column}>
                {column}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, index) => (
            <tr key={index}>
              {row.map((value, column) => (
                <td key={column}>{cellText(value)}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Decisions({ request }: { request: IAccessRequest }): JSX.Element | null {
  if (!request.decisions?.length) {
    return null;
  }
  return (
    <ul className="jp-DataAccess-decisions">
      {request.decisions.map((decision, index) => (
        <li key={index}>
          <StatusBadge status={decision.decision} /> by {decision.by}
          {decision.at ? ` on ${formatDate(decision.at, true)}` : ''}
          {decision.comment ? (
            <span className="jp-DataAccess-comment">: {decision.comment}</span>
          ) : null}
        </li>
      ))}
    </ul>
  );
}

export function RequestCard(props: {
  request: IAccessRequest;
  showUser?: boolean;
  children?: React.ReactNode;
}): JSX.Element {
  const { request } = props;
  return (
    <li className="jp-DataAccess-card" data-request-id={String(request.id)}>
      <div className="jp-DataAccess-cardHead">
        <span className="jp-DataAccess-title">{request.dataset}</span>
        <StatusBadge status={request.status} />
      </div>
      <dl className="jp-DataAccess-facts">
        {props.showUser ? (
          <>
            <dt>Requester</dt>
            <dd>{request.user}</dd>
          </>
        ) : null}
        <dt>Justification</dt>
        <dd className="jp-DataAccess-justification">{request.justification}</dd>
        <dt>Days</dt>
        <dd>{String(request.days)}</dd>
        <dt>Asked</dt>
        <dd>{formatDate(request.created_at, true)}</dd>
        {request.reason ? (
          <>
            <dt>Reason</dt>
            <dd>{request.reason}</dd>
          </>
        ) : null}
      </dl>
      <Decisions request={request} />
      {props.children}
    </li>
  );
}

export function GrantsTable(props: {
  grants: IGrant[];
  onRevoke: (grant: IGrant) => void;
}): JSX.Element {
  if (props.grants.length === 0) {
    return <p className="jp-DataAccess-empty">No active grants.</p>;
  }
  return (
    <div className="jp-DataAccess-previewWrap">
      <table className="jp-DataAccess-table">
        <thead>
          <tr>
            <th scope="col">User</th>
            <th scope="col">Dataset</th>
            <th scope="col">Expires</th>
            <th scope="col">
              <span className="jp-DataAccess-visuallyHidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {props.grants.map(grant => (
            <tr key={String(grant.id)} data-grant-id={String(grant.id)}>
              <td>{grant.user}</td>
              <td>{grant.dataset}</td>
              <td>{formatDate(grant.expires_at)}</td>
              <td>
                <Button label="Revoke" warn onClick={() => props.onRevoke(grant)} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The policy in force, one line per rule in the order they are tried, then the default. */
export function PolicyList({ policies }: { policies: IPolicies }): JSX.Element {
  const rules = policies.rules ?? [];
  return (
    <ol className="jp-DataAccess-policy" aria-label="Policy rules">
      {rules.map((rule, index) => (
        <li key={index} className={`jp-mod-${cssToken(String(rule.decision))}`}>
          <span className="jp-DataAccess-policyMatch">{describeMatch(rule.match)}</span>
          {': '}
          <span className="jp-DataAccess-policyDecision">{describeDecision(rule)}</span>
        </li>
      ))}
      {policies.default ? (
        <li className="jp-DataAccess-policyDefault">
          <span className="jp-DataAccess-policyMatch">anything else</span>
          {': '}
          <span className="jp-DataAccess-policyDecision">
            {describeDecision(policies.default)}
          </span>
        </li>
      ) : null}
    </ol>
  );
}

export function AuditTable({ records }: { records: IAuditRecord[] }): JSX.Element {
  if (records.length === 0) {
    return <p className="jp-DataAccess-empty">No audit records match.</p>;
  }
  return (
    <div className="jp-DataAccess-previewWrap">
      <table className="jp-DataAccess-table">
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">Time</th>
            <th scope="col">Actor</th>
            <th scope="col">Action</th>
            <th scope="col">Dataset</th>
            <th scope="col">Detail</th>
          </tr>
        </thead>
        <tbody>
          {records.map((record, index) => (
            <tr key={String(record.sequence ?? record.seq ?? index)}>
              <td>{String(record.sequence ?? record.seq ?? '')}</td>
              <td>{formatDate(record.time ?? record.at, true)}</td>
              <td>{record.actor}</td>
              <td>{record.action}</td>
              <td>{record.dataset ?? ''}</td>
              <td>{cellText(record.detail)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function cssToken(value: string): string {
  return value.toLowerCase().replace(/[^a-z0-9-]/g, '-');
}
