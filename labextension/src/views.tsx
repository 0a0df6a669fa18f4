/**
 * The sidebar: it is for finding. Browse and My requests are its tabs; a dataset opens its page
 * in the main area, and the reviewer's and the admin's entries open the service's own pages
 * there (the server's token never decides). JupyterLab-specific actions come in through
 * `IPanelActions`, so this file needs only React and can be tested in jsdom.
 */
import * as React from 'react';

import type { DataAccessAPI } from './api';
import { Button, DatasetRow, ErrorText, InfoText, RequestCard, useTrans } from './components';
import { IDatasetPageActions, requestOutcome } from './datasetview';
import {
  ACCESS_STATUSES,
  CLASSIFICATIONS,
  errorMessage,
  IAccessRequest,
  ICollection,
  IDataset,
  IMe,
  isAdmin,
  isReviewer,
  mergeTags,
  PAGE_SIZE,
  renewableRequestIds,
  ServicePageName
} from './model';
import { usePolled } from './polled';

export const SEARCH_DEBOUNCE_MS = 300;
/** The service answers at most this many items per call. */
const MAX_LIMIT = 200;

/** What the sidebar asks JupyterLab to do. */
export interface IPanelActions extends IDatasetPageActions {
  openDataset(datasetId: string): void;
  openPage(page: ServicePageName): void;
}

interface IViewProps {
  api: DataAccessAPI;
  actions: IPanelActions;
}

type TabName = 'browse' | 'mine';

/** The whole sidebar: Browse and My requests, then the Approvals (with its count) and Admin entries. */
export function DataAccessApp({
  api,
  actions,
  search
}: IViewProps & { search?: { text: string; nonce: number } }): JSX.Element {
  const trans = useTrans();
  const [tab, setTab] = React.useState<TabName>('browse');
  // Who I am, polled: the read-only count of requests waiting for me comes with it.
  const me = usePolled<IMe>(poll => api.me(poll), [api], { isVisible: actions.isVisible });
  React.useEffect(() => {
    if (search) {
      setTab('browse');
    }
  }, [search]);

  const tabs: { name: TabName; label: string; title: string }[] = [
    { name: 'browse', label: trans.__('Browse'), title: trans.__('Browse the catalogue') },
    { name: 'mine', label: trans.__('Requests'), title: trans.__('My requests') }
  ];
  const pending = me.value?.pending_reviews ?? 0;

  return (
    <div className="jp-DataAccess-app">
      <div className="jp-DataAccess-tabBar">
        <div className="jp-DataAccess-tabs" role="tablist" aria-label={trans.__('Data access')}>
          {tabs.map(item => (
            <button
              key={item.name}
              type="button"
              role="tab"
              aria-selected={tab === item.name}
              className={`jp-DataAccess-tab${tab === item.name ? ' jp-mod-active' : ''}`}
              title={item.title}
              onClick={() => setTab(item.name)}
            >
              {item.label}
            </button>
          ))}
        </div>
        {isReviewer(me.value) ? (
          <button
            type="button"
            className="jp-DataAccess-tab jp-DataAccess-pageLink"
            data-page="approvals"
            title={trans.__('Open the approvals inbox')}
            onClick={() => actions.openPage('approvals')}
          >
            {trans.__('Approvals')}
            {pending ? (
              <span
                className="jp-DataAccess-count"
                aria-label={trans._n('%1 request waits', '%1 requests wait', pending)}
              >
                {pending}
              </span>
            ) : null}
          </button>
        ) : null}
        {isAdmin(me.value) ? (
          <button
            type="button"
            className="jp-DataAccess-tab jp-DataAccess-pageLink"
            data-page="admin"
            title={trans.__('Open the admin workspace')}
            onClick={() => actions.openPage('admin')}
          >
            {trans.__('Admin')}
          </button>
        ) : null}
      </div>
      <ErrorText error={me.value ? null : me.error} />
      <div className="jp-DataAccess-tabPanel" role="tabpanel">
        {tab === 'browse' && <BrowseView api={api} actions={actions} search={search} />}
        {tab === 'mine' && <MyRequestsView api={api} actions={actions} me={me.value} />}
      </div>
    </div>
  );
}

/** Datasets from offset 0 up to `want` (the service gives at most 200 per call). */
async function firstDatasets(
  api: DataAccessAPI,
  query: { q: string; tag: string; classification: string; status: string },
  want: number,
  poll: boolean
): Promise<ICollection<IDataset>> {
  const items: IDataset[] = [];
  let total = 0;
  do {
    const limit = Math.min(MAX_LIMIT, want - items.length);
    const page = await api.datasets({ ...query, limit, offset: items.length }, poll);
    items.push(...page.items);
    total = page.total;
    if (page.items.length < limit) {
      break;
    }
  } while (items.length < want && items.length < total);
  return { items, total };
}

/** Search, filters and a paged list of datasets; a dataset opens its page in the main area. */
export function BrowseView({
  api,
  actions,
  search
}: IViewProps & { search?: { text: string; nonce: number } }): JSX.Element {
  const trans = useTrans();
  const [text, setText] = React.useState(search?.text ?? '');
  const [q, setQ] = React.useState(text.trim());
  const [classification, setClassification] = React.useState('');
  const [status, setStatus] = React.useState('');
  const [tag, setTag] = React.useState('');
  const [want, setWant] = React.useState(PAGE_SIZE);
  // Every tag of the datasets listed so far: the tag filter's choices (the API has no tag list).
  const [tags, setTags] = React.useState<string[]>([]);
  const [info, setInfo] = React.useState<string | null>(null);
  const [actionError, setActionError] = React.useState<string | null>(null);
  const input = React.useRef<HTMLInputElement>(null);

  React.useEffect(() => {
    if (search) {
      setText(search.text);
      input.current?.focus();
    }
  }, [search]);

  React.useEffect(() => {
    const timer = window.setTimeout(() => {
      setQ(text.trim());
      setWant(PAGE_SIZE);
    }, SEARCH_DEBOUNCE_MS);
    return () => window.clearTimeout(timer);
  }, [text]);

  const list = usePolled(
    poll => firstDatasets(api, { q, tag, classification, status }, want, poll),
    [api, q, tag, classification, status, want],
    { isVisible: actions.isVisible }
  );
  const items = React.useMemo(() => list.value?.items ?? [], [list.value]);
  const total = list.value?.total ?? 0;

  React.useEffect(() => setTags(known => mergeTags(known, items)), [items]);

  // The note about a pending request goes once that request is decided.
  const noteFor = React.useRef<string | null>(null);
  React.useEffect(() => {
    const decided = items.find(
      dataset => dataset.id === noteFor.current && dataset.access?.status !== 'pending'
    );
    if (decided) {
      noteFor.current = null;
      setInfo(null);
    }
  }, [items]);

  const requestAccess = async (dataset: IDataset): Promise<void> => {
    setActionError(null);
    try {
      const created = await actions.askForAccess(dataset);
      if (created) {
        setInfo(requestOutcome(created, trans));
        noteFor.current = created.status === 'pending' ? created.dataset : null;
        if (created.status === 'approved') {
          actions.notify('success', trans.__('Access to %1 was approved', created.dataset));
        }
        list.reload();
      }
    } catch (err) {
      setActionError(errorMessage(err));
    }
  };

  const load = async (dataset: IDataset): Promise<void> => {
    try {
      await actions.loadIntoNotebook(dataset.id);
    } catch (err) {
      setActionError(
        trans.__('Could not load %1 into a notebook: %2', dataset.id, errorMessage(err))
      );
    }
  };

  const select = (label: string, value: string, set: (v: string) => void, options: string[]) => (
    <select aria-label={label} value={value} onChange={event => set(event.target.value)}>
      {options.map((option, index) => (
        <option key={option} value={index === 0 ? '' : option}>
          {option}
        </option>
      ))}
    </select>
  );

  return (
    <div className="jp-DataAccess-browse">
      <div className="jp-DataAccess-filters">
        <input
          ref={input}
          type="search"
          className="jp-DataAccess-search"
          placeholder={trans.__('Search datasets')}
          aria-label={trans.__('Search datasets')}
          value={text}
          onChange={event => setText(event.target.value)}
        />
        {select(trans.__('Tag'), tag, setTag, [
          trans.__('Any tag'),
          ...(tag && !tags.includes(tag) ? [...tags, tag] : tags)
        ])}
        {select(trans.__('Classification'), classification, setClassification, [
          trans.__('Any classification'),
          ...CLASSIFICATIONS
        ])}
        {select(trans.__('My access'), status, setStatus, [
          trans.__('Any access'),
          ...ACCESS_STATUSES
        ])}
      </div>
      <ErrorText error={actionError ?? list.error} />
      <InfoText text={info} />
      <div className="jp-DataAccess-summary" aria-live="polite">
        {list.loading ? trans.__('Loading…') : trans.__('%1 of %2 datasets', items.length, total)}
      </div>
      <ul className="jp-DataAccess-list" aria-label={trans.__('Datasets')}>
        {items.map(dataset => (
          <DatasetRow
            key={dataset.id}
            dataset={dataset}
            onOpen={value => actions.openDataset(value.id)}
            onRequest={value => void requestAccess(value)}
            onLoad={value => void load(value)}
          />
        ))}
      </ul>
      {items.length < total ? (
        <Button
          label={trans.__('More')}
          onClick={() => setWant(items.length + PAGE_SIZE)}
          disabled={list.loading}
        />
      ) : null}
    </div>
  );
}

/**
 * My requests, newest first as the service orders them, with "Withdraw" on pending ones and
 * "Renew" on the newest approved one per dataset whose grant is active or expired.
 */
export function MyRequestsView({
  api,
  actions,
  me
}: IViewProps & { me?: IMe | null }): JSX.Element {
  const trans = useTrans();
  const [info, setInfo] = React.useState<string | null>(null);
  const [actionError, setActionError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState<string | null>(null);
  const user = me?.name;

  const mine = usePolled(
    async poll => {
      const [requests, grants] = await Promise.all([
        api.requests({}, poll),
        // All my grants, expired and revoked ones too: they decide which requests renew.
        api.grants({ user, active: '' }, poll).catch(() => null)
      ]);
      return { requests: requests.items, grants: grants?.items ?? [] };
    },
    [api, user],
    { isVisible: actions.isVisible }
  );

  const run = async (id: string, what: () => Promise<string>): Promise<void> => {
    setBusy(id);
    setActionError(null);
    try {
      setInfo(await what());
    } catch (err) {
      setActionError(errorMessage(err));
    } finally {
      setBusy(null);
      mine.reload();
    }
  };

  const withdraw = (request: IAccessRequest): Promise<void> =>
    run(String(request.id), async () => {
      const after = await api.withdraw(request.id);
      return requestOutcome(after ?? { ...request, status: 'withdrawn' }, trans);
    });

  const renew = (request: IAccessRequest): Promise<void> =>
    run(String(request.id), async () => {
      const created = await api.renew(request.id);
      if (created.status === 'approved') {
        actions.notify('success', trans.__('Access to %1 was renewed', created.dataset));
      }
      return trans.__('Renewal: %1', requestOutcome(created, trans));
    });

  const items = mine.value?.requests ?? null;
  const renewable = mine.value
    ? renewableRequestIds(mine.value.requests, mine.value.grants)
    : new Set<string>();

  return (
    <div className="jp-DataAccess-requests">
      <ErrorText error={actionError ?? mine.error} />
      <InfoText text={info} />
      {items === null ? (
        <div className="jp-DataAccess-summary">{trans.__('Loading…')}</div>
      ) : items.length === 0 ? (
        <p className="jp-DataAccess-empty">{trans.__('You have not asked for any dataset yet.')}</p>
      ) : (
        <ul className="jp-DataAccess-cards" aria-label={trans.__('My requests')}>
          {items.map(request => (
            <RequestCard key={String(request.id)} request={request}>
              <div className="jp-DataAccess-rowActions">
                <Button
                  label={trans.__('Open dataset')}
                  onClick={() => actions.openDataset(request.dataset)}
                />
                {request.status === 'pending' ? (
                  <Button
                    label={trans.__('Withdraw')}
                    disabled={busy === String(request.id)}
                    onClick={() => void withdraw(request)}
                  />
                ) : null}
                {renewable.has(String(request.id)) ? (
                  <Button
                    label={trans.__('Renew')}
                    accept
                    disabled={busy === String(request.id)}
                    title={trans.__(
                      'Ask again for this dataset, for the same days; the policy decides'
                    )}
                    onClick={() => void renew(request)}
                  />
                ) : null}
              </div>
            </RequestCard>
          ))}
        </ul>
      )}
    </div>
  );
}
