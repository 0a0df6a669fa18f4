/**
 * The one way the panel talks HTTP: to the server extension at `{baseUrl}dataaccess/api/v1/...`,
 * which forwards to the data access service. Errors come back as a typed DataAccessError built
 * from the service's JSON body `{"status", "message"}`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const API_PATH = 'dataaccess/api/v1';

/** An answer other than 2xx, or no answer at all (status 0). */
export class DataAccessError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'DataAccessError';
  }
}

/** `path?query` with empty values left out; values are URL-encoded. */
export function withQuery(
  path: string,
  params: Record<string, string | number | boolean | undefined | null>
): string {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') {
      query.append(key, String(value));
    }
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/**
 * Call the data access API. `path` is relative to `dataaccess/api/v1` and may carry a query.
 * Resolves with the parsed JSON body (or null for an empty body).
 */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const queryAt = path.indexOf('?');
  const route = queryAt === -1 ? path : path.slice(0, queryAt);
  const query = queryAt === -1 ? '' : path.slice(queryAt);
  const url = URLExt.join(settings.baseUrl, API_PATH, route) + query;

  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new DataAccessError(
      0,
      `The Jupyter server did not answer: ${error instanceof Error ? error.message : String(error)}`
    );
  }

  const text = await response.text();
  let data: unknown = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message =
      data && typeof (data as { message?: unknown }).message === 'string'
        ? (data as { message: string }).message
        : response.statusText || `Request failed with status ${response.status}`;
    throw new DataAccessError(response.status, message);
  }
  if (text.length > 0 && data === null) {
    throw new DataAccessError(
      response.status,
      'The server answered with something that is not JSON'
    );
  }
  return data as T;
}
