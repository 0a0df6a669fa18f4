/**
 * The panel's tabs and their state: what each tab loads, how it polls, what its buttons do.
 * JupyterLab-specific actions (dialogs, notebooks, notifications) come in through `IPanelActions`,
 * so this file needs only React and can be tested in jsdom.
 */
import * as React from 'react';

import type { DataAccessAPI } from './api';
import {
  AuditTable,
  Button,
  DatasetDetailsView,
  DatasetRow,
  ErrorText,
  GrantsTable,
  InfoText,
  PolicyList,
  RequestCard
} from './components';
import {
  ACCESS_STATUSES,
  AUDIT_ACTIONS,
  CLASSIFICATIONS,
  errorMessage,
  IAccessRequest,
  IAuditQuery,
  IAuditRecord,
  IDataset,
  IDatasetDetails,
  IGrant,
  IMe,
  IPolicies,
  IPreview,
  isAdmin,
  isReviewer,
  mergeTags,
  PAGE_SIZE,
  renewableRequestIds
} from './model';

export const POLL_INTERVAL_MS = 10_000;
export const SEARCH_DEBOUNCE_MS = 300;

/** What the panel asks JupyterLab to do. */
export interface IPanelActions {
  /** Ask for a justification and days, send the request; null when the user cancelled. */
  askForAccess(dataset: IDataset): Promise<IAccessRequest | null>;
  loadIntoNotebook(datasetId: string): Promise<void>;
  confirmRevoke(grant: IGrant): Promise<boolean>;
  notify(kind: 'success' | 'warning' | 'error' | 'info', message: string): void;
  /** Whether the panel is on screen (polls pause when it is not). */
  isVisible(): boolean;
}

interface IViewProps {
  api: DataAccessAPI;
  actions: IPanelActions;
}

/**
 * Run `load(false)` when `deps` change, then `load(true)` every 10 s while the page and the panel
 * are visible.
 */
export function usePolling(
  load: (poll: boolean) => Promise<void>,
  deps: React.DependencyList,
  isVisible: () => boolean = () => true
): void {
  const latest = React.useRef(load);
  latest.current = load;
  React.useEffect(() => {
    void latest.current(false);
    const timer = window.setInterval(() => {
      if (!document.hidden && isVisible()) {
        void latest.current(true);
      }
    }, POLL_INTERVAL_MS);
    return () => window.clearInterval(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
}

function requestOutcome(request: IAccessRequest): string {
  const reason = request.reason ? `: ${request.reason}` : '';
  return `Request for ${request.dataset} is ${request.status}${reason}`;
}

type TabName = 'browse' | 'mine' | 'approvals' | 'admin';

/** The whole panel: tabs, and a watch on my pending requests that notifies on decisions. */
export function DataAccessApp({ api, actions }: IViewProps): JSX.Element {
  const [me, setMe] = React.useState<IMe | null>(null);
  const [meError, setMeError] = React.useState<string | null>(null);
  const [tab, setTab] = React.useState<TabName>('browse');
  const [reviewCount, setReviewCount] = React.useState(0);
  const watched = React.useRef<Map<string, IAccessRequest> | null>(null);

  React.useEffect(() => {
    api.me().then(
      value => setMe(value),
      error => setMeError(errorMessage(error))
    );
  }, [api]);

  const track = React.useCallback((request: IAccessRequest) => {
    if (request.status === 'pending') {
      watched.current = watched.current ?? new Map();
      watched.current.set(String(request.id), request);
    }
  }, []);

  usePolling(
    async poll => {
      try {
        const pending = await api.requests('mine', 'pending', poll);
        const now = new Map(pending.items.map(request => [String(request.id), request]));
        for (const [id, before] of watched.current ?? []) {
          if (now.has(id)) {
            continue;
          }
          const after = await api.request(id, true).catch(() => before);
          if (after.status === 'approved') {
            actions.notify('success', `Access to ${after.dataset} was approved`);
          } else if (after.status === 'denied') {
            actions.notify('warning', requestOutcome(after));
          }
        }
        watched.current = now;
        if (isReviewer(me)) {
          const review = await api.requests('review', 'pending', poll);
          setReviewCount(review.total ?? review.items.length);
        }
      } catch {
        // The tab in view shows errors; the background watch stays quiet.
      }
    },
    [api, me]
  );

  // Short labels: Browse · Requests · Approvals fit on one row of the default sidebar.
  const tabs: { name: TabName; label: string; title: string; badge?: number }[] = [
    { name: 'browse', label: 'Browse', title: 'Browse the catalogue' },
    { name: 'mine', label: 'Requests', title: 'My requests' }
  ];
  if (isReviewer(me)) {
    tabs.push({
      name: 'approvals',
      label: 'Approvals',
      title: 'Requests waiting for my decision',
      badge: reviewCount
    });
  }
  if (isAdmin(me)) {
    tabs.push({ name: 'admin', label: 'Admin', title: 'Policy, grants and audit' });
  }

  return (
    <div className="jp-DataAccess-app">
      <div className="jp-DataAccess-tabs" role="tablist" aria-label="Data access">
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
            {item.badge ? (
              <span className="jp-DataAccess-count" aria-label={`${item.badge} pending`}>
                {item.badge}
              </span>
            ) : null}
          </button>
        ))}
      </div>
      <ErrorText error={meError} />
      <div className="jp-DataAccess-tabPanel" role="tabpanel">
        {tab === 'browse' && <BrowseView api={api} actions={actions} onRequested={track} />}
        {tab === 'mine' && (
          <MyRequestsView api={api} actions={actions} me={me} onRequested={track} />
        )}
        {tab === 'approvals' && (
          <ApprovalsView api={api} actions={actions} onCount={setReviewCount} />
        )}
        {tab === 'admin' && <AdminView api={api} actions={actions} />}
      </div>
    </div>
  );
}

/** Search, filters, a paged list of datasets and, when one is open, its details. */
export function BrowseView({
  api,
  actions,
  onRequested
}: IViewProps & { onRequested: (request: IAccessRequest) => void }): JSX.Element {
  const [text, setText] = React.useState('');
  const [q, setQ] = React.useState('');
  const [classification, setClassification] = React.useState('');
  const [status, setStatus] = React.useState('');
  const [tag, setTag] = React.useState('');
  // Every tag of the datasets listed so far: the tag filter's choices (the API has no tag list).
  const [tags, setTags] = React.useState<string[]>([]);
  const [items, setItems] = React.useState<IDataset[]>([]);
  const [total, setTotal] = React.useState(0);
  const [loading, setLoading] = React.useState(false);
  const [error, setError] = React.useState<string | null>(null);
  const [info, setInfo] = React.useState<string | null>(null);
  const [openId, setOpenId] = React.useState<string | null>(null);
  const [reload, setReload] = React.useState(0);
  const generation = React.useRef(0);
  const loaded = React.useRef(0);
  loaded.current = items.length;
  // The dataset whose pending request `info` describes: the note goes once it is decided.
  const pendingInfo = React.useRef<string | null>(null);

  React.useEffect(() => setTags(known => mergeTags(known, items)), [items]);

  React.useEffect(() => {
    const decided = items.find(
      dataset =>
        dataset.id === pendingInfo.current &&
        (dataset.access?.status === 'granted' || dataset.access?.status === 'denied')
    );
    if (decided) {
      pendingInfo.current = null;
      setInfo(null);
    }
  }, [items]);

  React.useEffect(() => {
    const timer = window.setTimeout(() => setQ(text.trim()), SEARCH_DEBOUNCE_MS);
    return () => window.clearTimeout(timer);
  }, [text]);

  usePolling(
    async poll => {
      const mine = poll ? generation.current : ++generation.current;
      // A poll refreshes what is shown (up to the service's cap), a new query starts over.
      const limit = poll ? Math.min(Math.max(loaded.current, PAGE_SIZE), 200) : PAGE_SIZE;
      if (!poll) {
        setLoading(true);
      }
      try {
        const page = await api.datasets({ q, tag, classification, status, limit, offset: 0 }, poll);
        if (mine !== generation.current) {
          return;
        }
        setItems(before => (poll ? [...page.items, ...before.slice(page.items.length)] : page.items));
        setTotal(page.total);
        setError(null);
      } catch (err) {
        if (mine === generation.current && !poll) {
          setError(errorMessage(err));
          setItems([]);
          setTotal(0);
        }
      } finally {
        if (!poll && mine === generation.current) {
          setLoading(false);
        }
      }
    },
    [api, q, tag, classification, status, reload],
    actions.isVisible
  );

  const loadMore = async (): Promise<void> => {
    const mine = generation.current;
    setLoading(true);
    try {
      const page = await api.datasets({ q, tag, classification, status, offset: items.length });
      if (mine === generation.current) {
        setItems(before => [...before, ...page.items]);
        setTotal(page.total);
      }
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setLoading(false);
    }
  };

  const requestAccess = async (dataset: IDataset): Promise<void> => {
    setError(null);
    try {
      const created = await actions.askForAccess(dataset);
      if (created) {
        onRequested(created);
        setInfo(requestOutcome(created));
        pendingInfo.current = created.status === 'pending' ? created.dataset : null;
        if (created.status === 'approved') {
          actions.notify('success', `Access to ${created.dataset} was approved`);
        }
        setReload(value => value + 1);
      }
    } catch (err) {
      setError(errorMessage(err));
    }
  };

  const load = async (dataset: IDataset): Promise<void> => {
    try {
      await actions.loadIntoNotebook(dataset.id);
    } catch (err) {
      setError(`Could not load ${dataset.id} into a notebook: ${errorMessage(err)}`);
    }
  };

  if (openId !== null) {
    return (
      <div className="jp-DataAccess-browse">
        <Button label="Back to datasets" onClick={() => setOpenId(null)} />
        <ErrorText error={error} />
        <InfoText text={info} />
        <DetailsPane
          api={api}
          actions={actions}
          datasetId={openId}
          reload={reload}
          onRequest={requestAccess}
          onLoad={load}
        />
      </div>
    );
  }

  return (
    <div className="jp-DataAccess-browse">
      <div className="jp-DataAccess-filters">
        <input
          type="search"
          className="jp-DataAccess-search"
          placeholder="Search datasets"
          aria-label="Search datasets"
          value={text}
          onChange={event => setText(event.target.value)}
        />
        <select aria-label="Tag" value={tag} onChange={event => setTag(event.target.value)}>
          <option value="">Any tag</option>
          {(tag && !tags.includes(tag) ? [...tags, tag] : tags).map(value => (
            <option key={value} value={value}>
              {value}
            </option>
          ))}
        </select>
        <select
          aria-label="Classification"
          value={classification}
          onChange={event => setClassification(event.target.value)}
        >
          <option value="">Any classification</option>
          {CLASSIFICATIONS.map(value => (
            <option key={value} value={value}>
              {value}
            </option>
          ))}
        </select>
        <select
          aria-label="My access"
          value={status}
          onChange={event => setStatus(event.target.value)}
        >
          <option value="">Any access</option>
          {ACCESS_STATUSES.map(value => (
            <option key={value} value={value}>
              {value}
            </option>
          ))}
        </select>
      </div>
      <ErrorText error={error} />
      <InfoText text={info} />
      <div className="jp-DataAccess-summary" aria-live="polite">
        {loading ? 'Loading…' : `${items.length} of ${total} datasets`}
      </div>
      <ul className="jp-DataAccess-list" aria-label="Datasets">
        {items.map(dataset => (
          <DatasetRow
            key={dataset.id}
            dataset={dataset}
            onOpen={value => setOpenId(value.id)}
            onRequest={requestAccess}
            onLoad={load}
          />
        ))}
      </ul>
      {items.length < total ? (
        <Button label="More" onClick={() => void loadMore()} disabled={loading} />
      ) : null}
    </div>
  );
}

function DetailsPane(
  props: IViewProps & {
    datasetId: string;
    reload: number;
    onRequest: (dataset: IDataset) => void;
    onLoad: (dataset: IDataset) => void;
  }
): JSX.Element {
  const { api, datasetId } = props;
  const [details, setDetails] = React.useState<IDatasetDetails | null>(null);
  const [preview, setPreview] = React.useState<IPreview | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [previewError, setPreviewError] = React.useState<string | null>(null);
  const previewFor = React.useRef<string | null>(null);

  usePolling(
    async poll => {
      try {
        const value = await api.dataset(datasetId, poll);
        setDetails(value);
        setError(null);
        const granted = value.access?.status === 'granted';
        if (granted && previewFor.current !== datasetId) {
          previewFor.current = datasetId;
          api.preview(datasetId, 20).then(
            rows => {
              setPreview(rows);
              setPreviewError(null);
            },
            err => setPreviewError(`No preview: ${errorMessage(err)}`)
          );
        } else if (!granted) {
          previewFor.current = null;
          setPreview(null);
        }
      } catch (err) {
        if (!poll) {
          setError(errorMessage(err));
        }
      }
    },
    [api, datasetId, props.reload],
    props.actions.isVisible
  );

  if (error) {
    return <ErrorText error={error} />;
  }
  if (!details) {
    return <div className="jp-DataAccess-summary">Loading…</div>;
  }
  return (
    <DatasetDetailsView
      details={details}
      preview={preview}
      previewError={previewError}
      onRequest={props.onRequest}
      onLoad={props.onLoad}
    />
  );
}

/**
 * My requests, newest first as the service orders them, with "Withdraw" on pending ones and
 * "Renew" on the newest approved one per dataset whose grant is active or expired.
 */
export function MyRequestsView({
  api,
  actions,
  me,
  onRequested
}: IViewProps & {
  me?: IMe | null;
  onRequested?: (request: IAccessRequest) => void;
}): JSX.Element {
  const [items, setItems] = React.useState<IAccessRequest[] | null>(null);
  const [grants, setGrants] = React.useState<IGrant[]>([]);
  const [error, setError] = React.useState<string | null>(null);
  const [info, setInfo] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState<string | null>(null);
  const [reload, setReload] = React.useState(0);
  const user = me?.name;

  usePolling(
    async poll => {
      try {
        const [page, mine] = await Promise.all([
          api.requests('mine', undefined, poll),
          // All my grants, expired and revoked ones too: they decide which requests renew.
          api.grants({ user, active: '' }, poll).catch(() => null)
        ]);
        setItems(page.items);
        if (mine) {
          setGrants(mine.items);
        }
        setError(null);
      } catch (err) {
        if (!poll) {
          setError(errorMessage(err));
        }
      }
    },
    [api, user, reload],
    actions.isVisible
  );

  const withdraw = async (request: IAccessRequest): Promise<void> => {
    try {
      const after = await api.withdraw(request.id);
      setInfo(requestOutcome(after ?? { ...request, status: 'withdrawn' }));
    } catch (err) {
      setError(errorMessage(err));
    }
    setReload(value => value + 1);
  };

  const renew = async (request: IAccessRequest): Promise<void> => {
    const id = String(request.id);
    setBusy(id);
    setError(null);
    try {
      const created = await api.renew(request.id);
      onRequested?.(created);
      setInfo(`Renewal: ${requestOutcome(created)}`);
      if (created.status === 'approved') {
        actions.notify('success', `Access to ${created.dataset} was renewed`);
      }
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(null);
      setReload(value => value + 1);
    }
  };

  const renewable = items ? renewableRequestIds(items, grants) : new Set<string>();

  return (
    <div className="jp-DataAccess-requests">
      <ErrorText error={error} />
      <InfoText text={info} />
      {items === null ? (
        <div className="jp-DataAccess-summary">Loading…</div>
      ) : items.length === 0 ? (
        <p className="jp-DataAccess-empty">You have not asked for any dataset yet.</p>
      ) : (
        <ul className="jp-DataAccess-cards" aria-label="My requests">
          {items.map(request => (
            <RequestCard key={String(request.id)} request={request}>
              {request.status === 'pending' ? (
                <Button label="Withdraw" onClick={() => void withdraw(request)} />
              ) : null}
              {renewable.has(String(request.id)) ? (
                <Button
                  label="Renew"
                  accept
                  disabled={busy === String(request.id)}
                  title="Ask again for this dataset, for the same days; the policy decides"
                  onClick={() => void renew(request)}
                />
              ) : null}
            </RequestCard>
          ))}
        </ul>
      )}
    </div>
  );
}

/** Pending requests I may decide, each with an optional comment, "Approve" and "Deny". */
export function ApprovalsView({
  api,
  actions,
  onCount
}: IViewProps & { onCount: (count: number) => void }): JSX.Element {
  const [items, setItems] = React.useState<IAccessRequest[] | null>(null);
  const [comments, setComments] = React.useState<Record<string, string>>({});
  const [error, setError] = React.useState<string | null>(null);
  const [info, setInfo] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState<string | null>(null);
  const [reload, setReload] = React.useState(0);

  usePolling(
    async poll => {
      try {
        const page = await api.requests('review', 'pending', poll);
        setItems(page.items);
        onCount(page.total ?? page.items.length);
        setError(null);
      } catch (err) {
        if (!poll) {
          setError(errorMessage(err));
        }
      }
    },
    [api, reload],
    actions.isVisible
  );

  const decide = async (request: IAccessRequest, decision: 'approve' | 'deny'): Promise<void> => {
    const id = String(request.id);
    setBusy(id);
    setError(null);
    try {
      const after = await api.decide(request.id, decision, comments[id] ?? '');
      setInfo(
        `${decision === 'approve' ? 'Approved' : 'Denied'} ${request.user}'s request for ` +
          `${request.dataset} (now ${after?.status ?? 'decided'})`
      );
      setComments(({ [id]: _dropped, ...rest }) => rest);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(null);
      setReload(value => value + 1);
    }
  };

  return (
    <div className="jp-DataAccess-approvals">
      <ErrorText error={error} />
      <InfoText text={info} />
      {items === null ? (
        <div className="jp-DataAccess-summary">Loading…</div>
      ) : items.length === 0 ? (
        <p className="jp-DataAccess-empty">Nothing waits for your decision.</p>
      ) : (
        <ul className="jp-DataAccess-cards" aria-label="Requests to decide">
          {items.map(request => {
            const id = String(request.id);
            return (
              <RequestCard key={id} request={request} showUser>
                <label className="jp-DataAccess-field">
                  <span>Comment (optional)</span>
                  <input
                    type="text"
                    className="jp-mod-styled"
                    value={comments[id] ?? ''}
                    onChange={event => {
                      const value = event.target.value;
                      setComments(before => ({ ...before, [id]: value }));
                    }}
                  />
                </label>
                <div className="jp-DataAccess-rowActions">
                  <Button
                    label="Approve"
                    accept
                    disabled={busy === id}
                    onClick={() => void decide(request, 'approve')}
                  />
                  <Button
                    label="Deny"
                    warn
                    disabled={busy === id}
                    onClick={() => void decide(request, 'deny')}
                  />
                </div>
              </RequestCard>
            );
          })}
        </ul>
      )}
    </div>
  );
}

/** The policy in force, active grants with "Revoke", and an audit search. */
export function AdminView({ api, actions }: IViewProps): JSX.Element {
  const [grants, setGrants] = React.useState<IGrant[] | null>(null);
  const [policies, setPolicies] = React.useState<IPolicies | null>(null);
  const [records, setRecords] = React.useState<IAuditRecord[] | null>(null);
  const [form, setForm] = React.useState<IAuditQuery>({});
  const [query, setQuery] = React.useState<IAuditQuery>({});
  const [error, setError] = React.useState<string | null>(null);
  const [info, setInfo] = React.useState<string | null>(null);
  const [reload, setReload] = React.useState(0);

  usePolling(
    async poll => {
      try {
        const [active, audit, policy] = await Promise.all([
          api.grants({ active: 'true' }, poll),
          api.audit(query, poll),
          api.policies(poll)
        ]);
        setGrants(active.items);
        setPolicies(policy);
        setRecords(audit.items);
        setError(null);
      } catch (err) {
        if (!poll) {
          setError(errorMessage(err));
        }
      }
    },
    [api, query, reload],
    actions.isVisible
  );

  const revoke = async (grant: IGrant): Promise<void> => {
    if (!(await actions.confirmRevoke(grant))) {
      return;
    }
    try {
      await api.revoke(grant.id);
      setInfo(`Revoked ${grant.user}'s access to ${grant.dataset}`);
    } catch (err) {
      setError(errorMessage(err));
    }
    setReload(value => value + 1);
  };

  const field = (key: keyof IAuditQuery, label: string, type = 'text'): JSX.Element => (
    <label className="jp-DataAccess-field">
      <span>{label}</span>
      <input
        type={type}
        className="jp-mod-styled"
        value={String(form[key] ?? '')}
        onChange={event => {
          const value = event.target.value;
          setForm(before => ({ ...before, [key]: value }));
        }}
      />
    </label>
  );

  return (
    <div className="jp-DataAccess-admin">
      <ErrorText error={error} />
      <InfoText text={info} />
      <h3 className="jp-DataAccess-heading">Policy</h3>
      {policies === null ? null : <PolicyList policies={policies} />}
      <h3 className="jp-DataAccess-heading">Active grants</h3>
      {grants === null ? (
        <div className="jp-DataAccess-summary">Loading…</div>
      ) : (
        <GrantsTable grants={grants} onRevoke={grant => void revoke(grant)} />
      )}
      <h3 className="jp-DataAccess-heading">Audit</h3>
      <form
        className="jp-DataAccess-filters"
        onSubmit={event => {
          event.preventDefault();
          setQuery({ ...form });
        }}
      >
        {field('user', 'User')}
        {field('dataset', 'Dataset')}
        <label className="jp-DataAccess-field">
          <span>Action</span>
          <select
            value={form.action ?? ''}
            onChange={event => {
              const value = event.target.value;
              setForm(before => ({ ...before, action: value }));
            }}
          >
            <option value="">Any action</option>
            {AUDIT_ACTIONS.map(action => (
              <option key={action} value={action}>
                {action}
              </option>
            ))}
          </select>
        </label>
        {field('since', 'Since', 'date')}
        <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept">
          Search audit
        </button>
      </form>
      {records === null ? null : <AuditTable records={records} />}
    </div>
  );
}
