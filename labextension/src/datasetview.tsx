/**
 * The dataset page's content (React only, testable in jsdom): what the dataset is, its schema with
 * masks, a masked preview once granted, my access and its expiry, the actions, and copyable
 * `da.load` / `da.sql` snippets. It polls the dataset, so a steward's decision shows without a
 * reload.
 */
import * as React from 'react';

import type { DataAccessAPI } from './api';
import {
  AccessBadge,
  Button,
  ClassificationBadge,
  ErrorText,
  InfoText,
  PreviewGrid,
  Snippet,
  useTrans
} from './components';
import { ITrans } from './i18n';
import {
  canRequest,
  columnsOf,
  errorMessage,
  formatDate,
  IAccessRequest,
  IDataset,
  IDatasetDetails,
  IPreview,
  loadCode,
  sqlCode
} from './model';
import { usePolled } from './polled';

/** What a dataset page asks JupyterLab to do. */
export interface IDatasetPageActions {
  /** Ask for a justification and days, send the request; null when the user cancelled. */
  askForAccess(dataset: IDataset): Promise<IAccessRequest | null>;
  loadIntoNotebook(datasetId: string): Promise<void>;
  copy(text: string): void;
  notify(kind: 'success' | 'warning' | 'error' | 'info', message: string): void;
  /** Whether the page is on screen (polls pause when it is not). */
  isVisible(): boolean;
}

const PREVIEW_ROWS = 20;

export function requestOutcome(request: IAccessRequest, trans: ITrans): string {
  return request.reason
    ? trans.__('Request for %1 is %2: %3', request.dataset, request.status, request.reason)
    : trans.__('Request for %1 is %2', request.dataset, request.status);
}

function stewardsText(dataset: IDataset, trans: ITrans): string {
  const users = dataset.stewards?.users ?? [];
  const groups = (dataset.stewards?.groups ?? []).map(group => trans.__('group %1', group));
  return [...users, ...groups].join(', ') || '—';
}

/** The newest approved request of mine for the dataset, when nothing newer is pending. */
function renewable(requests: IAccessRequest[]): IAccessRequest | null {
  if (requests.some(request => request.status === 'pending')) {
    return null;
  }
  return requests.find(request => request.status === 'approved') ?? null;
}

export function DatasetPageView(props: {
  api: DataAccessAPI;
  actions: IDatasetPageActions;
  datasetId: string;
  onLoaded?: (details: IDatasetDetails) => void;
}): JSX.Element {
  const { api, actions, datasetId } = props;
  const trans = useTrans();
  const [info, setInfo] = React.useState<string | null>(null);
  const [actionError, setActionError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);

  const details = usePolled(poll => api.dataset(datasetId, poll), [api, datasetId], {
    isVisible: actions.isVisible
  });
  const status = details.value?.access?.status ?? 'none';
  // My requests for this dataset (for Renew and the pending note): again when my access changes.
  const mine = usePolled(() => api.requests({ dataset: datasetId }), [api, datasetId, status], {
    poll: false
  });

  const [preview, setPreview] = React.useState<IPreview | null>(null);
  const [previewError, setPreviewError] = React.useState<string | null>(null);
  const granted = status === 'granted';
  React.useEffect(() => {
    // A preview is a governed, audited read: once per grant, not on every poll.
    let current = true;
    setPreview(null);
    setPreviewError(null);
    if (granted) {
      api.preview(datasetId, PREVIEW_ROWS).then(
        value => current && setPreview(value),
        error => current && setPreviewError(trans.__('No preview: %1', errorMessage(error)))
      );
    }
    return () => {
      current = false;
    };
  }, [api, datasetId, granted, trans]);

  const onLoaded = props.onLoaded;
  React.useEffect(() => {
    if (details.value && onLoaded) {
      onLoaded(details.value);
    }
  }, [details.value, onLoaded]);

  // "pending" is no longer news once the request is decided.
  React.useEffect(() => {
    if (status !== 'pending') {
      setInfo(null);
    }
  }, [status]);

  if (details.value === null) {
    return details.error ? (
      <div className="jp-DataAccess-page">
        <ErrorText error={details.error} />
      </div>
    ) : (
      <div className="jp-DataAccess-page jp-DataAccess-summary">{trans.__('Loading…')}</div>
    );
  }
  const dataset = details.value;
  const columns = columnsOf(dataset);
  const requests = mine.value?.items ?? [];
  const renewFrom = status === 'granted' || status === 'expired' ? renewable(requests) : null;
  const pendingRequest = requests.find(request => request.status === 'pending');

  const act = async (what: () => Promise<IAccessRequest | null>): Promise<void> => {
    setBusy(true);
    setActionError(null);
    try {
      const created = await what();
      if (created) {
        setInfo(requestOutcome(created, trans));
        if (created.status === 'approved') {
          actions.notify('success', trans.__('Access to %1 was approved', created.dataset));
        }
        details.reload();
        mine.reload();
      }
    } catch (error) {
      setActionError(errorMessage(error));
    } finally {
      setBusy(false);
    }
  };

  const load = async (): Promise<void> => {
    setActionError(null);
    try {
      await actions.loadIntoNotebook(dataset.id);
    } catch (error) {
      setActionError(
        trans.__('Could not load %1 into a notebook: %2', dataset.id, errorMessage(error))
      );
    }
  };

  return (
    <div className="jp-DataAccess-page" data-dataset-id={dataset.id}>
      <header className="jp-DataAccess-pageHead">
        <h1 className="jp-DataAccess-pageTitle">{dataset.title || dataset.id}</h1>
        <div className="jp-DataAccess-badges">
          <ClassificationBadge value={String(dataset.classification)} />
          <AccessBadge access={dataset.access} />
        </div>
      </header>
      <p className="jp-DataAccess-description">{dataset.description}</p>
      <ErrorText error={details.error ?? actionError} />
      <InfoText text={info} />

      <section className="jp-DataAccess-pageColumns">
        <dl className="jp-DataAccess-facts" aria-label={trans.__('About this dataset')}>
          <dt>{trans.__('Id')}</dt>
          <dd>
            <code>{dataset.id}</code>
          </dd>
          <dt>{trans.__('Owner')}</dt>
          <dd>{dataset.owner || '—'}</dd>
          <dt>{trans.__('Stewards')}</dt>
          <dd>{stewardsText(dataset, trans)}</dd>
          <dt>{trans.__('Classification')}</dt>
          <dd>{String(dataset.classification)}</dd>
          {dataset.tags?.length ? (
            <>
              <dt>{trans.__('Tags')}</dt>
              <dd>{dataset.tags.join(', ')}</dd>
            </>
          ) : null}
          {dataset.version ? (
            <>
              <dt>{trans.__('Version')}</dt>
              <dd className="jp-DataAccess-version" title={dataset.version}>
                {dataset.version}
              </dd>
            </>
          ) : null}
          {dataset.updated_at ? (
            <>
              <dt>{trans.__('Updated')}</dt>
              <dd>{formatDate(dataset.updated_at, true)}</dd>
            </>
          ) : null}
          {typeof dataset.rows === 'number' ? (
            <>
              <dt>{trans.__('Rows')}</dt>
              <dd>{dataset.rows.toLocaleString()}</dd>
            </>
          ) : null}
        </dl>

        <div className="jp-DataAccess-myAccess" aria-label={trans.__('My access')} role="group">
          <h2 className="jp-DataAccess-heading">{trans.__('My access')}</h2>
          <p className="jp-DataAccess-accessLine">
            <AccessBadge access={dataset.access} />
            {status === 'granted' && dataset.access?.expires_at ? (
              <span className="jp-DataAccess-expiry">
                {' '}
                {trans.__('expires %1', formatDate(dataset.access.expires_at, true))}
              </span>
            ) : null}
          </p>
          {pendingRequest ? (
            <p className="jp-DataAccess-hint">
              {trans.__(
                'Asked on %1 for %2 days; waiting for a steward.',
                formatDate(pendingRequest.created_at, true),
                pendingRequest.days
              )}
            </p>
          ) : null}
          <div className="jp-DataAccess-rowActions">
            {granted ? (
              <Button label={trans.__('Load into notebook')} accept onClick={() => void load()} />
            ) : null}
            {renewFrom ? (
              <Button
                label={trans.__('Renew')}
                disabled={busy}
                title={trans.__(
                  'Ask again for this dataset, for the same days; the policy decides'
                )}
                onClick={() => void act(() => api.renew(renewFrom.id))}
              />
            ) : null}
            {canRequest(status) && !renewFrom ? (
              <Button
                label={trans.__('Request access')}
                accept
                disabled={busy}
                onClick={() => void act(() => actions.askForAccess(dataset))}
              />
            ) : null}
          </div>
        </div>
      </section>

      <h2 className="jp-DataAccess-heading">{trans.__('Schema')}</h2>
      {dataset.source_error ? <ErrorText error={dataset.source_error} /> : null}
      {columns.length > 0 ? (
        <div className="jp-DataAccess-gridFrame">
          <table className="jp-DataAccess-table jp-DataAccess-schema">
            <thead>
              <tr>
                <th scope="col">{trans.__('Column')}</th>
                <th scope="col">{trans.__('Type')}</th>
                <th scope="col">{trans.__('Mask')}</th>
              </tr>
            </thead>
            <tbody>
              {columns.map(column => (
                <tr key={column.name} className={column.mask ? 'jp-mod-masked' : undefined}>
                  <td>{column.name}</td>
                  <td>{column.type}</td>
                  <td>{column.mask ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}

      <h2 className="jp-DataAccess-heading">{trans.__('Preview')}</h2>
      <ErrorText error={previewError} />
      {preview ? (
        <PreviewGrid preview={preview} />
      ) : granted ? null : (
        <p className="jp-DataAccess-empty">
          {trans.__('The masked preview shows here once you have access.')}
        </p>
      )}

      <h2 className="jp-DataAccess-heading">{trans.__('Use it in a notebook')}</h2>
      <div className="jp-DataAccess-snippets">
        <Snippet label="da.load" code={loadCode(dataset.id)} onCopy={actions.copy} />
        <Snippet label="da.sql" code={sqlCode(dataset.id)} onCopy={actions.copy} />
      </div>
    </div>
  );
}
