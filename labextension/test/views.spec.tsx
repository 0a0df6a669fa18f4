/**
 * The tabs with a fake API: the tag filter asks with `tag=`, "Renew" posts to requests/{id}/renew
 * and shows the new request's outcome, the Admin tab shows the policy in force, and the tab labels.
 */
import * as React from 'react';
import { act } from 'react';
import { createRoot, Root } from 'react-dom/client';

import type { DataAccessAPI } from '../src/api';
import { IAccessRequest, IDataset, IGrant, IPolicies } from '../src/model';
import { AdminView, BrowseView, DataAccessApp, IPanelActions, MyRequestsView } from '../src/views';

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
    confirmRevoke: jest.fn(async () => true),
    notify: jest.fn(),
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
    me: jest.fn(async () => ({ name: 'ada', groups: [], capabilities: ['browse'], admin: false })),
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
    act(() => root.render(<BrowseView api={api} actions={actions()} onRequested={jest.fn()} />));
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
    const onRequested = jest.fn();
    const me = { name: 'ada', groups: [], capabilities: ['browse'], admin: false };
    act(() =>
      root.render(<MyRequestsView api={api} actions={actions()} me={me} onRequested={onRequested} />)
    );
    await settle();
    expect(grants).toHaveBeenCalledWith({ user: 'ada', active: '' }, false);
    const card = (id: number) => container.querySelector(`li[data-request-id="${id}"]`)!;
    const names = (id: number) =>
      Array.from(card(id).querySelectorAll('button')).map(button => button.textContent);
    expect(names(2)).toEqual(['Renew']);
    expect(names(1)).toEqual([]); // revoked: ask again from Browse

    await act(async () => card(2).querySelector('button')!.click());
    await settle();
    expect(renew).toHaveBeenCalledWith(2);
    expect(onRequested).toHaveBeenCalledWith(expect.objectContaining({ id: 3 }));
    expect(container.querySelector('.jp-DataAccess-info')?.textContent).toBe(
      `Renewal: Request for penguins-masked is pending: needs 1 steward approval: ${HOSTILE}`
    );
    expect(container.querySelector('img')).toBeNull();
    expect(names(3)).toEqual(['Withdraw']);
    expect(names(2)).toEqual([]); // a renewal is pending
  });
});

describe('AdminView policy', () => {
  it('lists the rules in order, then the default, above the grants', async () => {
    const policies: IPolicies = {
      rules: [
        { match: { datasets: ['forbidden'] }, decision: 'deny', max_days: 30 },
        { match: { classification: ['public'] }, decision: 'auto', max_days: 365 },
        { match: { classification: ['restricted'] }, decision: 'review', approvals: 2, max_days: 7 }
      ],
      default: { decision: 'review', approvals: 1, max_days: 30 }
    };
    const api = fakeApi({
      policies: jest.fn(async () => policies),
      audit: jest.fn(async () => ({ items: [], total: 0 }))
    });
    act(() => root.render(<AdminView api={api} actions={actions()} />));
    await settle();
    const lines = Array.from(container.querySelectorAll('.jp-DataAccess-policy li')).map(
      li => li.textContent
    );
    expect(lines).toEqual([
      'dataset forbidden: denied',
      'public data: approved at once, up to 365 days',
      'restricted data: 2 steward approvals, up to 7 days',
      'anything else: 1 steward approval, up to 30 days'
    ]);
    const headings = Array.from(container.querySelectorAll('h3')).map(h => h.textContent);
    expect(headings.indexOf('Policy')).toBeLessThan(headings.indexOf('Active grants'));
  });
});

describe('DataAccessApp tabs', () => {
  it('names the tabs Browse, Requests, Approvals for a steward', async () => {
    const api = fakeApi({
      me: jest.fn(async () => ({ name: 'bob', groups: [], capabilities: ['browse', 'review'], admin: false }))
    });
    act(() => root.render(<DataAccessApp api={api} actions={actions()} />));
    await settle();
    const tabs = Array.from(container.querySelectorAll('[role="tab"]')).map(tab => tab.textContent);
    expect(tabs).toEqual(['Browse', 'Requests', 'Approvals']);
  });
});
