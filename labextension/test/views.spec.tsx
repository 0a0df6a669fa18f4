/**
 * The views with a fake API: the tag filter asks with `tag=`, "Renew" posts to requests/{id}/renew
 * and shows the new request's outcome, the sidebar's entries open the service's pages, and the
 * dataset page turns to granted on a poll and then shows the preview.
 */
import * as React from 'react';
import { act } from 'react';
import { createRoot, Root } from 'react-dom/client';

import type { DataAccessAPI } from '../src/api';
import { DatasetPageView } from '../src/datasetview';
import { plainTrans } from '../src/i18n';
import { IAccessRequest, IDataset, IDatasetDetails, IGrant, IMe, IPreview } from '../src/model';
import { PanelContext } from '../src/polled';
import { BrowseView, DataAccessApp, IPanelActions, MyRequestsView } from '../src/views';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const HOSTILE = '<img src=x onerror="window.__pwned=1">';

let container: HTMLDivElement;
let root: Root;

beforeEach(() => {
  container = document.createElement('div');
  document.body.appendChild(container);
  root = createRoot(container);
});

afterEach(() => {
  act(() => root.unmount());
  container.remove();
});

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await act(async () => {
      await new Promise(resolve => setTimeout(resolve, 0));
    });
  }
}

function actions(): IPanelActions {
  return {
    askForAccess: jest.fn(async () => null),
    loadIntoNotebook: jest.fn(async () => undefined),
    copy: jest.fn(),
    notify: jest.fn(),
    openDataset: jest.fn(),
    openPage: jest.fn(),
    isVisible: () => true
  };
}

function ds(id: string, tags: string[]): IDataset {
  return {
    id,
    title: id,
    description: '',
    classification: 'public',
    tags,
    owner: 'bob',
    stewards: {},
    access: { status: 'none' }
  };
}

function req(
  id: number,
  dataset: string,
  status: IAccessRequest['status'],
  reason: string | null = null
): IAccessRequest {
  return {
    id,
    dataset,
    user: 'ada',
    justification: 'j',
    days: 7,
    status,
    reason,
    created_at: '2025-01-01T00:00:00Z',
    decisions: []
  };
}

function grant(id: number, requestId: number, status: IGrant['status']): IGrant {
  return {
    id,
    dataset: 'x',
    user: 'ada',
    request_id: requestId,
    created_at: '2025-01-01T00:00:00Z',
    expires_at: '2025-02-01T00:00:00Z',
    revoked_at: null,
    status
  };
}

function fakeApi(overrides: Partial<DataAccessAPI>): DataAccessAPI {
  return {
    me: jest.fn(async (): Promise<IMe> => ({
      name: 'ada',
      groups: [],
      capabilities: ['browse'],
      admin: false
    })),
    datasets: jest.fn(async () => ({ items: [], total: 0 })),
    requests: jest.fn(async () => ({ items: [], total: 0 })),
    grants: jest.fn(async () => ({ items: [], total: 0 })),
    ...overrides
  } as unknown as DataAccessAPI;
}

describe('BrowseView tag filter', () => {
  it('offers the tags listed so far and asks the API with tag=', async () => {
    const datasets = jest.fn(async (query: { tag?: string }) =>
      query.tag === 'teaching'
        ? { items: [ds('penguins', ['biology', 'teaching'])], total: 1 }
        : { items: [ds('penguins', ['biology', 'teaching']), ds('salaries', ['hr'])], total: 2 }
    );
    const api = fakeApi({ datasets });
    act(() => root.render(<BrowseView api={api} actions={actions()} />));
    await settle();
    const select = container.querySelector<HTMLSelectElement>('select[aria-label="Tag"]')!;
    const options = () => Array.from(select.options).map(option => option.value);
    expect(options()).toEqual(['', 'biology', 'hr', 'teaching']);

    act(() => {
      select.value = 'teaching';
      select.dispatchEvent(new Event('change', { bubbles: true }));
    });
    await settle();
    expect(datasets).toHaveBeenLastCalledWith(expect.objectContaining({ tag: 'teaching' }), false);
    expect(container.querySelectorAll('li.jp-DataAccess-row')).toHaveLength(1);
    expect(options()).toEqual(['', 'biology', 'hr', 'teaching']); // narrowing keeps the choices
  });
});

describe('MyRequestsView Renew', () => {
  it('renews an approved request with an active grant and shows the new request', async () => {
    let requests = [req(2, 'penguins-masked', 'approved'), req(1, 'salaries', 'approved')];
    const renew = jest.fn(async () => {
      const created = req(3, 'penguins-masked', 'pending', `needs 1 steward approval: ${HOSTILE}`);
      requests = [created, ...requests];
      return created;
    });
    const grants = jest.fn(async () => ({
      items: [grant(20, 2, 'active'), grant(10, 1, 'revoked')],
      total: 2
    }));
    const api = fakeApi({
      requests: jest.fn(async () => ({ items: requests, total: requests.length })),
      grants,
      renew
    });
    const me: IMe = { name: 'ada', groups: [], capabilities: ['browse'], admin: false };
    act(() => root.render(<MyRequestsView api={api} actions={actions()} me={me} />));
    await settle();
    expect(grants).toHaveBeenCalledWith({ user: 'ada', active: '' }, false);
    const card = (id: number) => container.querySelector(`li[data-request-id="${id}"]`)!;
    const names = (id: number) =>
      Array.from(card(id).querySelectorAll('button')).map(button => button.textContent);
    expect(names(2)).toEqual(['Open dataset', 'Renew']);
    expect(names(1)).toEqual(['Open dataset']); // revoked: ask again from Browse

    await act(async () => card(2).querySelectorAll('button')[1].click());
    await settle();
    expect(renew).toHaveBeenCalledWith(2);
    expect(container.querySelector('.jp-DataAccess-info')?.textContent).toBe(
      `Renewal: Request for penguins-masked is pending: needs 1 steward approval: ${HOSTILE}`
    );
    expect(container.querySelector('img')).toBeNull();
    expect(names(3)).toEqual(['Open dataset', 'Withdraw']);
    expect(names(2)).toEqual(['Open dataset']); // a renewal is pending
  });
});

describe('DataAccessApp', () => {
  it('offers Browse and Requests as tabs, and opens the service pages with the count', async () => {
    const api = fakeApi({
      me: jest.fn(async (): Promise<IMe> => ({
        name: 'bob',
        groups: [],
        capabilities: ['browse', 'request'],
        admin: false,
        can_review: true,
        can_admin: false,
        pending_reviews: 3,
        pages: { approvals: '/services/dataaccess/pages/approvals' }
      }))
    });
    const given = actions();
    act(() => root.render(<DataAccessApp api={api} actions={given} />));
    await settle();
    const tabs = Array.from(container.querySelectorAll('[role="tab"]')).map(tab => tab.textContent);
    expect(tabs).toEqual(['Browse', 'Requests']);
    const links = container.querySelectorAll<HTMLButtonElement>('.jp-DataAccess-pageLink');
    expect(Array.from(links).map(link => link.textContent)).toEqual(['Approvals3']);
    act(() => links[0].click());
    expect(given.openPage).toHaveBeenCalledWith('approvals');
  });

  it('shows no Approvals or Admin entry to whom /me says may not', async () => {
    const api = fakeApi({
      me: jest.fn(async (): Promise<IMe> => ({
        name: 'ada',
        groups: [],
        capabilities: ['browse', 'review'],
        admin: true,
        can_review: false,
        can_admin: false
      }))
    });
    act(() => root.render(<DataAccessApp api={api} actions={actions()} />));
    await settle();
    expect(container.querySelectorAll('.jp-DataAccess-pageLink')).toHaveLength(0);
  });
});

function details(status: 'none' | 'pending' | 'granted'): IDatasetDetails {
  return {
    ...ds('penguins-masked', ['biology']),
    title: 'Penguins with governance',
    classification: 'confidential',
    access: { status, expires_at: status === 'granted' ? '2030-01-01T00:00:00Z' : null },
    version: 'v-123',
    updated_at: '2025-01-01T00:00:00Z',
    rows: 224,
    columns: [
      { name: 'island', type: 'string', mask: null },
      { name: 'sex', type: 'string', mask: 'redact' }
    ]
  };
}

describe('DatasetPageView', () => {
  beforeEach(() => jest.useFakeTimers({ doNotFake: ['setTimeout', 'queueMicrotask', 'nextTick'] }));
  afterEach(() => jest.useRealTimers());

  it('turns to granted on a background poll, then shows the masked preview once', async () => {
    let status: 'none' | 'pending' | 'granted' = 'pending';
    const dataset = jest.fn(async () => details(status));
    const preview = jest.fn(async (): Promise<IPreview> => ({
      columns: [
        { name: 'island', type: 'string', mask: null },
        { name: 'sex', type: 'string', mask: 'redact' }
      ],
      rows: [['Biscoe', 'REDACTED']]
    }));
    const api = fakeApi({ dataset, preview });
    act(() =>
      root.render(
        <PanelContext.Provider
          value={{ trans: plainTrans, pollIntervalMs: 2000, notifications: true }}
        >
          <DatasetPageView api={api} actions={actions()} datasetId="penguins-masked" />
        </PanelContext.Provider>
      )
    );
    await settle();
    const text = (): string => container.textContent ?? '';
    expect(text()).toContain('Version');
    expect(text()).toContain('v-123');
    expect(
      Array.from(container.querySelectorAll('.jp-DataAccess-schema td')).map(td => td.textContent)
    ).toEqual(['island', 'string', '—', 'sex', 'string', 'redact']);
    expect(
      container.querySelector('.jp-DataAccess-myAccess .jp-DataAccess-status')?.textContent
    ).toBe('pending');
    expect(preview).not.toHaveBeenCalled();

    status = 'granted';
    await act(async () => {
      jest.advanceTimersByTime(2000);
    });
    await settle();
    expect(dataset).toHaveBeenLastCalledWith('penguins-masked', true); // a background poll
    expect(
      container.querySelector('.jp-DataAccess-myAccess .jp-DataAccess-status')?.textContent
    ).toMatch(/^granted until/);
    expect(container.querySelector('[role=grid]')?.textContent).toContain('REDACTED');
    await act(async () => {
      jest.advanceTimersByTime(2000);
    });
    await settle();
    expect(preview).toHaveBeenCalledTimes(1); // an audited read: not on every poll
    const buttons = Array.from(container.querySelectorAll('button')).map(b => b.textContent);
    expect(buttons).toContain('Load into notebook');
    expect(buttons).not.toContain('Request access');
  });
});
