/**
 * The toasts that `/notifications` items become, and the plain translation bundle used outside
 * JupyterLab.
 */
import { plainTrans } from '../src/i18n';
import { INotification } from '../src/model';
import { toastFor } from '../src/notifications';

function item(action: string): INotification {
  return {
    seq: 7,
    at: '2025-01-01T00:00:00Z',
    action,
    dataset: 'penguins-masked',
    request_id: 3,
    grant_id: null,
    actor: 'steward',
    user: 'analyst',
    message: ''
  };
}

describe('toastFor', () => {
  it('says a grant was approved, a request denied, access revoked or expired', () => {
    expect(toastFor(item('grant.create'), plainTrans)).toEqual({
      kind: 'success',
      message: 'Access to penguins-masked was approved'
    });
    expect(toastFor(item('request.deny'), plainTrans)?.message).toBe(
      'steward denied your request for penguins-masked'
    );
    expect(toastFor(item('grant.revoke'), plainTrans)?.kind).toBe('warning');
    expect(toastFor(item('grant.expire'), plainTrans)?.message).toBe(
      'Your access to penguins-masked expired'
    );
    expect(toastFor(item('request.create'), plainTrans)?.message).toBe(
      'analyst asks for access to penguins-masked'
    );
  });

  it('stays quiet for a first approval of two (the grant says it when it comes)', () => {
    expect(toastFor(item('request.approve'), plainTrans)).toBeNull();
  });
});

describe('plainTrans', () => {
  it('fills %1, %2 like the null translator, with n first for plurals', () => {
    expect(plainTrans.__('%1 of %2 datasets', 3, 7)).toBe('3 of 7 datasets');
    expect(plainTrans._n('%1 request waits', '%1 requests wait', 1)).toBe('1 request waits');
    expect(plainTrans._n('up to %2 day', 'up to %2 days', 2, '1.5')).toBe('up to 1.5 days');
  });
});
