/**
 * Toasts for what changed for me — a grant, a denial, a revocation — from the service's
 * `GET notifications?since=`, polled in the background (marked no_track_activity) whether or not
 * the Data panel is open. The first call only learns where "now" is, so old news is not repeated.
 */
import { Poll } from '@lumino/polling';

import type { DataAccessAPI } from './api';
import { ITrans } from './i18n';
import { INotification, SINCE_NOW } from './model';

type Notify = (kind: 'success' | 'warning' | 'error' | 'info', message: string) => void;

/** The toast for one change, or null for changes that need none (a first approval of two). */
export function toastFor(
  item: INotification,
  trans: ITrans
): { kind: 'success' | 'warning' | 'info'; message: string } | null {
  switch (item.action) {
    case 'grant.create':
      return { kind: 'success', message: trans.__('Access to %1 was approved', item.dataset) };
    case 'request.deny':
      return {
        kind: 'warning',
        message: trans.__('%1 denied your request for %2', item.actor, item.dataset)
      };
    case 'grant.revoke':
      return {
        kind: 'warning',
        message: trans.__('%1 revoked your access to %2', item.actor, item.dataset)
      };
    case 'grant.expire':
      return { kind: 'info', message: trans.__('Your access to %1 expired', item.dataset) };
    case 'request.create':
      return {
        kind: 'info',
        message: trans.__('%1 asks for access to %2', item.user, item.dataset)
      };
    default:
      return null;
  }
}

export class NotificationWatch {
  constructor(
    private readonly api: DataAccessAPI,
    private readonly notify: Notify,
    private readonly options: () => { trans: ITrans; enabled: boolean; intervalMs: number }
  ) {
    this._poll = new Poll({
      factory: () => this._tick(),
      frequency: { interval: options().intervalMs, backoff: true, max: 300_000 },
      name: 'jupyterhub-dataaccess:notifications',
      standby: 'when-hidden'
    });
  }

  /** Apply a new polling interval from the settings. */
  configure(): void {
    this._poll.frequency = { ...this._poll.frequency, interval: this.options().intervalMs };
  }

  dispose(): void {
    this._poll.dispose();
  }

  private async _tick(): Promise<void> {
    const first = this._since === null;
    const answer = await this.api.notifications(this._since ?? SINCE_NOW, true);
    this._since = answer.last_seq;
    const { trans, enabled } = this.options();
    if (first || !enabled) {
      return;
    }
    for (const item of answer.items) {
      const toast = toastFor(item, trans);
      if (toast) {
        this.notify(toast.kind, toast.message);
      }
    }
  }

  private _since: number | null = null;
  private readonly _poll: Poll;
}
