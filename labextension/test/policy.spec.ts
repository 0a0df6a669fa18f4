/**
 * The expected outcome shown before sending, the days cap, the tag choices and which requests
 * renew: pure helpers of model.ts, and the request dialog's body in jsdom.
 */
import {
  clampDays,
  daysText,
  IAccessRequest,
  IDataset,
  IGrant,
  IRequestPolicy,
  mergeTags,
  policyOutcomeText,
  renewableRequestIds
} from '../src/model';
import { problemWith, RequestFormBody } from '../src/requestform';

const HOSTILE = '<img src=x onerror="window.__pwned=1">';

describe('policyOutcomeText', () => {
  it('says approved at once, with the reason', () => {
    expect(
      policyOutcomeText({
        outcome: 'auto',
        approvals: 0,
        max_days: 365,
        reason: 'auto-approved: public data'
      })
    ).toBe('Approved at once — auto-approved: public data');
  });

  it('counts the steward approvals without repeating them', () => {
    expect(
      policyOutcomeText({
        outcome: 'review',
        approvals: 2,
        max_days: 7,
        reason: 'needs 2 steward approvals: restricted data'
      })
    ).toBe('Needs 2 steward approvals — restricted data');
    expect(
      policyOutcomeText({
        outcome: 'review',
        approvals: 1,
        max_days: 30,
        reason: 'needs 1 steward approval (no policy rule matched)'
      })
    ).toBe('Needs 1 steward approval — no policy rule matched');
  });

  it('says the policy denies it', () => {
    expect(
      policyOutcomeText({
        outcome: 'deny',
        approvals: 0,
        max_days: 30,
        reason: 'denied by policy: dataset forbidden'
      })
    ).toBe('Policy denies this request — dataset forbidden');
    expect(policyOutcomeText({ outcome: 'deny', approvals: 0, max_days: 30, reason: '' })).toBe(
      'Policy denies this request'
    );
  });
});

describe('clampDays and daysText', () => {
  it('caps at the maximum and leaves what validation must refuse alone', () => {
    expect(clampDays(45, 30)).toBe(30);
    expect(clampDays(14, 30)).toBe(14);
    expect(clampDays(0.5, 7)).toBe(0.5);
    expect(clampDays(45, null)).toBe(45);
    expect(clampDays(-1, 30)).toBe(-1);
    expect(Number.isNaN(clampDays(NaN, 30))).toBe(true);
  });

  it('writes days for people', () => {
    expect(daysText(30)).toBe('30');
    expect(daysText(0.5)).toBe('0.5');
    expect(daysText(1 / 3)).toBe('0.33');
  });
});

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

describe('mergeTags', () => {
  it('collects unique sorted tags and keeps the known ones when a filter narrows the list', () => {
    const known = mergeTags([], [ds('a', ['teaching', 'biology']), ds('b', ['biology', 'hr'])]);
    expect(known).toEqual(['biology', 'hr', 'teaching']);
    expect(mergeTags(known, [ds('a', ['teaching'])])).toBe(known);
    expect(mergeTags(known, [ds('c', ['finance'])])).toEqual([
      'biology',
      'finance',
      'hr',
      'teaching'
    ]);
  });
});

function req(id: number, dataset: string, status: IAccessRequest['status']): IAccessRequest {
  return {
    id,
    dataset,
    user: 'ada',
    justification: 'j',
    days: 7,
    status,
    reason: null,
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
    revoked_at: status === 'revoked' ? '2025-01-10T00:00:00Z' : null,
    status
  };
}

describe('renewableRequestIds', () => {
  it('offers Renew on approved requests whose grant is active or expired, not revoked', () => {
    const requests = [req(3, 'a', 'approved'), req(2, 'b', 'approved'), req(1, 'c', 'approved')];
    const grants = [grant(30, 3, 'active'), grant(20, 2, 'expired'), grant(10, 1, 'revoked')];
    expect(renewableRequestIds(requests, grants)).toEqual(new Set(['3', '2']));
  });

  it('offers it on the newest approved request of a dataset only, and not while one is pending', () => {
    const requests = [
      req(5, 'a', 'approved'),
      req(4, 'a', 'approved'),
      req(3, 'b', 'pending'),
      req(2, 'b', 'approved'),
      req(1, 'c', 'denied')
    ];
    const grants = [grant(50, 5, 'active'), grant(40, 4, 'expired'), grant(20, 2, 'active')];
    expect(renewableRequestIds(requests, grants)).toEqual(new Set(['5']));
  });

  it('offers nothing without a grant to go by', () => {
    expect(renewableRequestIds([req(1, 'a', 'approved')], [])).toEqual(new Set());
  });
});

describe('RequestFormBody', () => {
  const dataset = { ...ds('salaries', ['hr']), title: HOSTILE, classification: 'restricted' };
  const review: IRequestPolicy = {
    outcome: 'review',
    approvals: 2,
    max_days: 7,
    reason: 'needs 2 steward approvals: restricted data'
  };

  it('shows the expected outcome and caps the days (max, hint, clamp)', () => {
    const form = new RequestFormBody(dataset, review);
    document.body.appendChild(form.node);
    const outcome = form.node.querySelector('.jp-DataAccess-outcome')!;
    expect(outcome.textContent).toBe('Needs 2 steward approvals — restricted data');
    expect(outcome.classList.contains('jp-mod-review')).toBe(true);
    expect(form.days.max).toBe('7');
    expect(form.days.value).toBe('7'); // the default 30 capped
    expect(form.node.querySelector('.jp-DataAccess-hint')?.textContent).toBe('up to 7 days');

    form.days.value = '45';
    form.days.dispatchEvent(new Event('change'));
    expect(form.days.value).toBe('7');
    form.days.value = '99';
    expect(form.getValue().days).toBe(7); // even before the field is left

    expect(form.canSubmit).toBe(false);
    const changed = jest.fn();
    form.onChange = changed;
    form.justification.value = '  payroll audit ';
    form.justification.dispatchEvent(new Event('input'));
    expect(changed).toHaveBeenCalled();
    expect(form.canSubmit).toBe(true);
    expect(form.getValue()).toEqual({ justification: 'payroll audit', days: 7 });
    expect(problemWith(form.getValue(), review)).toBe('');
    form.node.remove();
  });

  it('keeps the title as text', () => {
    const form = new RequestFormBody(dataset, review);
    expect(form.node.querySelector('p')?.textContent).toContain(HOSTILE);
    expect(form.node.querySelector('img')).toBeNull();
  });

  it('cannot be sent when the policy denies it', () => {
    const deny: IRequestPolicy = {
      outcome: 'deny',
      approvals: 0,
      max_days: 30,
      reason: 'denied by policy: dataset forbidden'
    };
    const form = new RequestFormBody(dataset, deny, '', { justification: 'please', days: 3 });
    expect(form.node.querySelector('.jp-DataAccess-outcome')?.textContent).toBe(
      'Policy denies this request — dataset forbidden'
    );
    expect(form.denied).toBe(true);
    expect(form.canSubmit).toBe(false);
    expect(problemWith(form.getValue(), deny)).toContain('Policy denies');
  });

  it('works without a policy: no cap, a neutral note', () => {
    const form = new RequestFormBody(dataset, null);
    expect(form.days.max).toBe('');
    expect(form.days.value).toBe('30');
    expect(form.node.querySelector('.jp-DataAccess-hint')).toBeNull();
    expect(form.node.querySelector('.jp-DataAccess-outcome')?.textContent).toContain(
      'policy decides'
    );
    form.days.value = '400';
    expect(form.getValue().days).toBe(400);
  });
});
