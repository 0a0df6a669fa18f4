/**
 * Rendering: user-supplied strings (titles, descriptions, justifications, comments, preview cells)
 * appear as text, never as HTML; buttons carry the names the product contract promises.
 */
import * as React from 'react';
import { act } from 'react';
import { createRoot, Root } from 'react-dom/client';

import { DataGrid, DatasetRow, PreviewGrid, RequestCard } from '../src/components';
import { IAccessRequest, IColumn, IDataset, loadCode, sqlCode } from '../src/model';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';

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

function render(element: React.ReactElement): void {
  act(() => root.render(element));
}

function dataset(status: IDataset['access']['status'], extra: Partial<IDataset> = {}): IDataset {
  return {
    id: 'penguins',
    title: HOSTILE,
    description: HOSTILE,
    classification: 'confidential',
    tags: ['biology'],
    owner: 'bob',
    stewards: { users: ['bob'], groups: ['stewards'] },
    access: { status, expires_at: status === 'granted' ? '2030-01-02T00:00:00Z' : null },
    ...extra
  };
}

function buttonNames(): string[] {
  return Array.from(container.querySelectorAll('button')).map(button => button.textContent ?? '');
}

function expectNoMarkup(): void {
  expect(container.querySelector('img')).toBeNull();
  expect(container.querySelector('script')).toBeNull();
  expect((window as { __pwned?: number }).__pwned).toBeUndefined();
}

describe('DatasetRow', () => {
  it('shows a hostile title as text', () => {
    render(
      <DatasetRow
        dataset={dataset('none')}
        onOpen={jest.fn()}
        onRequest={jest.fn()}
        onLoad={jest.fn()}
      />
    );
    expect(container.querySelector('.jp-DataAccess-title')?.textContent).toBe(HOSTILE);
    expectNoMarkup();
  });

  it('offers "Request access" for none, denied, expired and revoked, and sends the dataset', () => {
    for (const status of ['none', 'denied', 'expired', 'revoked'] as const) {
      const onRequest = jest.fn();
      render(
        <DatasetRow
          dataset={dataset(status)}
          onOpen={jest.fn()}
          onRequest={onRequest}
          onLoad={jest.fn()}
        />
      );
      expect(buttonNames()).toEqual(['Request access']);
      act(() => container.querySelector('button')!.click());
      expect(onRequest).toHaveBeenCalledWith(expect.objectContaining({ id: 'penguins' }));
    }
  });

  it('says "no access" rather than the API\'s "none"', () => {
    render(
      <DatasetRow
        dataset={dataset('none')}
        onOpen={jest.fn()}
        onRequest={jest.fn()}
        onLoad={jest.fn()}
      />
    );
    expect(container.querySelector('.jp-DataAccess-status')?.textContent).toBe('no access');
  });

  it('offers "Load into notebook" when granted and shows the expiry', () => {
    const onLoad = jest.fn();
    const onOpen = jest.fn();
    render(
      <DatasetRow
        dataset={dataset('granted')}
        onOpen={onOpen}
        onRequest={jest.fn()}
        onLoad={onLoad}
      />
    );
    expect(buttonNames()).toEqual(['Load into notebook']);
    expect(container.textContent).toContain('granted until');
    act(() => container.querySelector('button')!.click());
    expect(onLoad).toHaveBeenCalled();
    expect(onOpen).not.toHaveBeenCalled();
  });

  it('offers nothing while pending', () => {
    render(
      <DatasetRow
        dataset={dataset('pending')}
        onOpen={jest.fn()}
        onRequest={jest.fn()}
        onLoad={jest.fn()}
      />
    );
    expect(buttonNames()).toEqual([]);
    expect(container.textContent).toContain('pending');
  });
});

describe('PreviewGrid', () => {
  it('accepts rows as objects keyed by column', () => {
    render(<PreviewGrid preview={{ columns: ['a', 'b'], rows: [{ a: 1, b: null }] }} />);
    const cells = Array.from(container.querySelectorAll('[role=gridcell]')).map(
      td => td.textContent
    );
    expect(cells).toEqual(['1', '']);
  });

  it('takes the column objects the service sends and shows hostile cells as text', () => {
    const columns: IColumn[] = [
      { name: 'species', type: 'string', mask: null },
      { name: 'sex', type: 'string', mask: 'redact' }
    ];
    render(<PreviewGrid preview={{ columns, rows: [[HOSTILE, 'REDACTED']] }} />);
    const heads = Array.from(container.querySelectorAll('[role=columnheader]')).map(
      th => th.textContent
    );
    expect(heads).toEqual(['species', 'sex']);
    expect(container.querySelector('tbody')?.textContent).toBe(`${HOSTILE}REDACTED`);
    expectNoMarkup();
  });
});

describe('DataGrid', () => {
  it('keeps one cell in the Tab order and moves it with the arrow keys, Home and End', () => {
    render(
      <DataGrid
        label="grid"
        columns={['a', 'b', 'c']}
        rows={[
          [1, 2, 3],
          [4, 5, 6]
        ]}
      />
    );
    const tabbable = (): string[] =>
      Array.from(container.querySelectorAll('[tabindex="0"]')).map(
        cell => (cell as HTMLElement).dataset.cell ?? ''
      );
    expect(tabbable()).toEqual(['0:0']);
    const grid = container.querySelector('[role=grid]')!;
    const press = (key: string, ctrlKey = false): void =>
      act(() => {
        grid.dispatchEvent(new KeyboardEvent('keydown', { key, ctrlKey, bubbles: true }));
      });
    press('ArrowDown');
    press('ArrowRight');
    expect(tabbable()).toEqual(['1:1']);
    expect((document.activeElement as HTMLElement).textContent).toBe('2');
    press('End');
    expect(tabbable()).toEqual(['1:2']);
    press('ArrowDown');
    press('ArrowDown'); // stays on the last row
    expect(tabbable()).toEqual(['2:2']);
    press('Home', true);
    expect(tabbable()).toEqual(['0:0']);
  });
});

describe('RequestCard', () => {
  it('shows justification, requester and decision comments as text', () => {
    const request: IAccessRequest = {
      id: 5,
      dataset: 'penguins',
      user: HOSTILE,
      justification: `${HOSTILE}\u202E\u200B`,
      days: 7.5,
      status: 'denied',
      reason: HOSTILE,
      created_at: '2025-01-01T10:00:00Z',
      decisions: [{ by: 'bob', decision: 'deny', comment: HOSTILE, at: '2025-01-02T10:00:00Z' }]
    };
    render(
      <ul>
        <RequestCard request={request} showUser />
      </ul>
    );
    expect(container.querySelector('.jp-DataAccess-justification')?.textContent).toBe(
      `${HOSTILE}\u202E\u200B`
    );
    expect(container.querySelector('.jp-DataAccess-comment')?.textContent).toBe(`: ${HOSTILE}`);
    expect(container.textContent).toContain('7.5');
    expectNoMarkup();
  });
});

describe('loadCode and sqlCode', () => {
  it('is the documented three-line cell', () => {
    expect(loadCode('penguins')).toBe(
      'import jupyterhub_dataaccess as da\ndf = da.load("penguins")\ndf'
    );
  });

  it('quotes a dataset id that is not a plain SQL name', () => {
    expect(sqlCode('penguins')).toContain("da.sql('SELECT * FROM penguins LIMIT 100')");
    expect(sqlCode('nyc-taxi')).toContain(`da.sql('SELECT * FROM "nyc-taxi" LIMIT 100')`);
  });
});
