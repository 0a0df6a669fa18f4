/**
 * requestAPI: the URL it calls, and the DataAccessError it raises from JSON error bodies,
 * non-JSON bodies and unreachable servers. JupyterLab's ServerConnection is replaced by a stub
 * that answers with real `Response` objects.
 */
const makeRequest = jest.fn();

jest.mock('@jupyterlab/services', () => ({
  ServerConnection: {
    makeSettings: () => ({ baseUrl: 'http://localhost:8888/user/ada/' }),
    makeRequest: (...args: unknown[]) => makeRequest(...args)
  }
}));

jest.mock('@jupyterlab/coreutils', () => ({
  URLExt: {
    join: (...parts: string[]) =>
      parts
        .map((part, index) =>
          index === 0 ? part.replace(/\/+$/, '') : part.replace(/^\/+|\/+$/g, '')
        )
        .filter(part => part.length > 0)
        .join('/')
  }
}));

import { errorMessage } from '../src/model';
import { DataAccessError, requestAPI, withQuery } from '../src/request';

function answer(status: number, body: string): Response {
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: status === 500 ? 'Internal Server Error' : 'Status',
    text: async () => body
  } as Response;
}

async function failure(pending: Promise<unknown>): Promise<DataAccessError> {
  try {
    await pending;
  } catch (error) {
    return error as DataAccessError;
  }
  throw new Error('expected a DataAccessError');
}

beforeEach(() => makeRequest.mockReset());

describe('requestAPI', () => {
  it('calls the server extension under baseUrl, keeping the query', async () => {
    makeRequest.mockResolvedValue(answer(200, '{"items": [], "total": 0}'));
    const data = await requestAPI<{ total: number }>('datasets?q=pen&limit=50');
    expect(data.total).toBe(0);
    expect(makeRequest.mock.calls[0][0]).toBe(
      'http://localhost:8888/user/ada/dataaccess/api/v1/datasets?q=pen&limit=50'
    );
  });

  it('passes the method and body through', async () => {
    makeRequest.mockResolvedValue(answer(201, '{"id": 1, "status": "pending"}'));
    await requestAPI('requests', { method: 'POST', body: '{"dataset": "x"}' });
    expect(makeRequest.mock.calls[0][1]).toEqual({ method: 'POST', body: '{"dataset": "x"}' });
  });

  it('raises DataAccessError with the status and message of a JSON error', async () => {
    makeRequest.mockResolvedValue(answer(404, '{"status": 404, "message": "No such dataset"}'));
    const error = await failure(requestAPI('datasets/nope'));
    expect(error).toBeInstanceOf(DataAccessError);
    expect(error.status).toBe(404);
    expect(error.message).toBe('No such dataset');
    expect(errorMessage(error)).toBe('No such dataset (404)');
  });

  it('falls back to the status text when the error body is not JSON', async () => {
    makeRequest.mockResolvedValue(answer(500, '<html>Traceback…</html>'));
    const error = await failure(requestAPI('me'));
    expect(error).toBeInstanceOf(DataAccessError);
    expect(error.status).toBe(500);
    expect(error.message).toBe('Internal Server Error');
  });

  it('turns a network failure into DataAccessError with status 0', async () => {
    makeRequest.mockRejectedValue(new TypeError('Failed to fetch'));
    const error = await failure(requestAPI('me'));
    expect(error).toBeInstanceOf(DataAccessError);
    expect(error.status).toBe(0);
    expect(errorMessage(error)).toContain('did not answer');
  });

  it('resolves to null on an empty success body', async () => {
    makeRequest.mockResolvedValue(answer(204, ''));
    await expect(requestAPI('grants/3', { method: 'DELETE' })).resolves.toBeNull();
  });

  it('refuses a success body that is not JSON', async () => {
    makeRequest.mockResolvedValue(answer(200, 'not json'));
    await expect(requestAPI('me')).rejects.toBeInstanceOf(DataAccessError);
  });
});

describe('withQuery', () => {
  it('leaves out empty values and encodes the rest', () => {
    expect(
      withQuery('datasets', { q: 'a&b=c', classification: '', status: undefined, limit: 50 })
    ).toBe('datasets?q=a%26b%3Dc&limit=50');
    expect(withQuery('me', {})).toBe('me');
  });
});
