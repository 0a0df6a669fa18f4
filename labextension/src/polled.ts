/**
 * The one way the panel fetches what it shows: `usePolled` loads a resource when its inputs
 * change and again every `pollIntervalMs` (from the settings) while the page and the view are
 * visible. Background refreshes are `poll: true`, which the API marks `no_track_activity` so they
 * never keep an idle server alive. An answer that arrives after newer inputs is dropped.
 */
import * as React from 'react';

import { ITrans, plainTrans } from './i18n';
import { errorMessage } from './model';

export const DEFAULT_POLL_INTERVAL_MS = 10_000;

/** What every view reads from its surroundings: the strings' bundle and the settings. */
export interface IPanelContext {
  trans: ITrans;
  pollIntervalMs: number;
  notifications: boolean;
}

export const PanelContext = React.createContext<IPanelContext>({
  trans: plainTrans,
  pollIntervalMs: DEFAULT_POLL_INTERVAL_MS,
  notifications: true
});

export interface IPolled<T> {
  /** The latest answer (kept while a new one loads, and when a background refresh fails). */
  value: T | null;
  /** Why the last load in the foreground failed; a failed background refresh stays quiet. */
  error: string | null;
  /** True while a load in the foreground is under way. */
  loading: boolean;
  /** Load again now, in the foreground. */
  reload: () => void;
}

export interface IPollOptions {
  /** Ticks are skipped while this says false (a hidden sidebar, a background tab). */
  isVisible?: () => boolean;
  /** false: load when the inputs change and on `reload()` only, with no ticks. */
  poll?: boolean;
}

/**
 * `load(false)` when `deps` change or `reload()` is called, `load(true)` on every tick while
 * `isVisible()` and the browser tab is visible.
 */
export function usePolled<T>(
  load: (poll: boolean) => Promise<T>,
  deps: React.DependencyList,
  options: IPollOptions = {}
): IPolled<T> {
  const isVisible = options.isVisible ?? (() => true);
  const polling = options.poll ?? true;
  const { pollIntervalMs } = React.useContext(PanelContext);
  const [value, setValue] = React.useState<T | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [loading, setLoading] = React.useState(false);
  const [nonce, setNonce] = React.useState(0);
  const latest = React.useRef({ load, isVisible });
  latest.current = { load, isVisible };

  React.useEffect(() => {
    let current = true;
    const run = async (poll: boolean): Promise<void> => {
      if (!poll) {
        setLoading(true);
      }
      try {
        const answer = await latest.current.load(poll);
        if (current) {
          setValue(answer);
          setError(null);
        }
      } catch (err) {
        if (current && !poll) {
          setError(errorMessage(err));
        }
      } finally {
        if (current && !poll) {
          setLoading(false);
        }
      }
    };
    void run(false);
    if (!polling) {
      return () => {
        current = false;
      };
    }
    const timer = window.setInterval(
      () => {
        if (!document.hidden && latest.current.isVisible()) {
          void run(true);
        }
      },
      Math.max(1000, pollIntervalMs)
    );
    return () => {
      current = false;
      window.clearInterval(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, nonce, pollIntervalMs, polling]);

  const reload = React.useCallback(() => setNonce(n => n + 1), []);
  return { value, error, loading, reload };
}
