/**
 * Presentational React components of the panel and the dataset page. Every string that comes
 * from users or the service (titles, descriptions, justifications, comments, cells) is rendered as
 * a React text node, never as HTML. Strings of our own go through the translation bundle.
 */
import * as React from 'react';

import { ITrans } from './i18n';
import {
  AccessStatus,
  canRequest,
  formatDate,
  IAccess,
  IAccessRequest,
  IDataset,
  IPreview,
  previewColumns,
  previewRows
} from './model';
import { PanelContext } from './polled';

/** The bundle of the surrounding panel (JupyterLab's, or the plain one in tests). */
export function useTrans(): ITrans {
  return React.useContext(PanelContext).trans;
}

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

/** "granted until 12 Mar 2025", "pending", "no access", ... */
export function accessLabel(access: IAccess | undefined, trans: ITrans): string {
  const status: AccessStatus = access?.status ?? 'none';
  if (status === 'granted' && access?.expires_at) {
    return trans.__('granted until %1', formatDate(access.expires_at));
  }
  const labels: Record<AccessStatus, string> = {
    granted: trans.__('granted'),
    pending: trans.__('pending'),
    none: trans.__('no access'),
    denied: trans.__('denied'),
    expired: trans.__('expired'),
    revoked: trans.__('revoked')
  };
  return labels[status] ?? status;
}

export function StatusBadge({ status, label }: { status: string; label?: string }): JSX.Element {
  return (
    <span className={`jp-DataAccess-badge jp-DataAccess-status jp-mod-${cssToken(status)}`}>
      {label ?? status}
    </span>
  );
}

export function AccessBadge({ access }: { access: IAccess | undefined }): JSX.Element {
  const trans = useTrans();
  return <StatusBadge status={access?.status ?? 'none'} label={accessLabel(access, trans)} />;
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

/** "Load into notebook" when granted, "Request access" when the user may ask, else nothing. */
export function DatasetActions(props: {
  dataset: IDataset;
  onRequest: (dataset: IDataset) => void;
  onLoad: (dataset: IDataset) => void;
}): JSX.Element | null {
  const trans = useTrans();
  const status = props.dataset.access?.status ?? 'none';
  if (status === 'granted') {
    return (
      <Button
        label={trans.__('Load into notebook')}
        accept
        onClick={() => props.onLoad(props.dataset)}
      />
    );
  }
  if (canRequest(status)) {
    return (
      <Button
        label={trans.__('Request access')}
        accept
        onClick={() => props.onRequest(props.dataset)}
      />
    );
  }
  return null;
}

export function DatasetRow(props: IDatasetRowProps): JSX.Element {
  const trans = useTrans();
  const { dataset } = props;
  return (
    <li
      className={`jp-DataAccess-row${props.selected ? ' jp-mod-selected' : ''}`}
      data-dataset-id={dataset.id}
    >
      <div
        className="jp-DataAccess-rowMain"
        role="button"
        tabIndex={0}
        title={trans.__('Open the dataset page')}
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
          <AccessBadge access={dataset.access} />
        </span>
      </div>
      <div className="jp-DataAccess-rowActions">
        <DatasetActions dataset={dataset} onRequest={props.onRequest} onLoad={props.onLoad} />
      </div>
    </li>
  );
}

export function cellText(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

/**
 * A keyboard-accessible data grid (WAI-ARIA grid pattern): one cell is in the Tab order; arrow
 * keys, Home/End and PageUp/PageDown move between cells. It scrolls inside its own frame, so a
 * wide or long table is never cut off; long cell values are shortened with the full value on
 * hover.
 */
export function DataGrid(props: {
  label: string;
  columns: string[];
  rows: unknown[][];
  className?: string;
}): JSX.Element {
  const { columns, rows } = props;
  const [at, setAt] = React.useState<[number, number]>([0, 0]);
  const grid = React.useRef<HTMLTableElement>(null);
  const lastRow = rows.length; // row 0 is the header
  const lastColumn = Math.max(0, columns.length - 1);

  const move = (row: number, column: number): void => {
    const next: [number, number] = [
      Math.min(Math.max(row, 0), lastRow),
      Math.min(Math.max(column, 0), lastColumn)
    ];
    setAt(next);
    grid.current?.querySelector<HTMLElement>(`[data-cell="${next[0]}:${next[1]}"]`)?.focus();
  };

  const onKeyDown = (event: React.KeyboardEvent): void => {
    const [row, column] = at;
    const moves: Record<string, [number, number]> = {
      ArrowDown: [row + 1, column],
      ArrowUp: [row - 1, column],
      ArrowRight: [row, column + 1],
      ArrowLeft: [row, column - 1],
      Home: event.ctrlKey ? [0, 0] : [row, 0],
      End: event.ctrlKey ? [lastRow, lastColumn] : [row, lastColumn],
      PageDown: [row + 10, column],
      PageUp: [row - 10, column]
    };
    const target = moves[event.key];
    if (target) {
      event.preventDefault();
      move(target[0], target[1]);
    }
  };

  const cell = (row: number, column: number, text: string, header: boolean): JSX.Element => {
    const focused = at[0] === row && at[1] === column;
    const Tag = header ? 'th' : 'td';
    return (
      <Tag
        key={column}
        role={header ? 'columnheader' : 'gridcell'}
        scope={header ? 'col' : undefined}
        tabIndex={focused ? 0 : -1}
        data-cell={`${row}:${column}`}
        title={text.length > 40 ? text : undefined}
        onFocus={() => setAt([row, column])}
      >
        {text}
      </Tag>
    );
  };

  return (
    <div className={`jp-DataAccess-gridFrame ${props.className ?? ''}`}>
      <table
        ref={grid}
        role="grid"
        aria-label={props.label}
        aria-rowcount={rows.length + 1}
        className="jp-DataAccess-table jp-DataAccess-grid"
        onKeyDown={onKeyDown}
      >
        <thead>
          <tr role="row">{columns.map((name, column) => cell(0, column, name, true))}</tr>
        </thead>
        <tbody>
          {rows.map((values, index) => (
            <tr role="row" key={index}>
              {columns.map((_, column) => cell(index + 1, column, cellText(values[column]), false))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The masked preview in a DataGrid. */
export function PreviewGrid({ preview }: { preview: IPreview }): JSX.Element {
  const trans = useTrans();
  const rows = previewRows(preview);
  return (
    <DataGrid
      label={trans._n('Preview: the first row', 'Preview: the first %1 rows', rows.length)}
      columns={previewColumns(preview)}
      rows={rows}
      className="jp-DataAccess-preview"
    />
  );
}

export function Decisions({ request }: { request: IAccessRequest }): JSX.Element | null {
  const trans = useTrans();
  if (!request.decisions?.length) {
    return null;
  }
  return (
    <ul className="jp-DataAccess-decisions">
      {request.decisions.map((decision, index) => (
        <li key={index}>
          <StatusBadge status={decision.decision} />{' '}
          {decision.at
            ? trans.__('by %1 on %2', decision.by, formatDate(decision.at, true))
            : trans.__('by %1', decision.by)}
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
  const trans = useTrans();
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
            <dt>{trans.__('Requester')}</dt>
            <dd>{request.user}</dd>
          </>
        ) : null}
        <dt>{trans.__('Justification')}</dt>
        <dd className="jp-DataAccess-justification">{request.justification}</dd>
        <dt>{trans.__('Days')}</dt>
        <dd>{String(request.days)}</dd>
        <dt>{trans.__('Asked')}</dt>
        <dd>{formatDate(request.created_at, true)}</dd>
        {request.reason ? (
          <>
            <dt>{trans.__('Reason')}</dt>
            <dd>{request.reason}</dd>
          </>
        ) : null}
      </dl>
      <Decisions request={request} />
      {props.children}
    </li>
  );
}

/** A copyable code snippet: the code as text and a "Copy" button. */
export function Snippet(props: {
  label: string;
  code: string;
  onCopy: (code: string) => void;
}): JSX.Element {
  const trans = useTrans();
  return (
    <figure className="jp-DataAccess-snippet">
      <figcaption>{props.label}</figcaption>
      <pre>
        <code>{props.code}</code>
      </pre>
      <Button
        label={trans.__('Copy')}
        title={trans.__('Copy %1 to the clipboard', props.label)}
        onClick={() => props.onCopy(props.code)}
      />
    </figure>
  );
}

export function cssToken(value: string): string {
  return value.toLowerCase().replace(/[^a-z0-9-]/g, '-');
}
