import {
  ApiError,
  errorFromResponse,
  MISSING_EXTENSION_MESSAGE,
  requestAPI
} from '../request';
import { FakeServer, fakeResponse } from './fakeserver';

describe('errorFromResponse', () => {
  it('keeps the API message and reason', async () => {
    const error = await errorFromResponse(
      fakeResponse({
        status: 503,
        body: {
          message: 'the Docker engine does not answer',
          reason: 'EngineUnavailable'
        }
      })
    );
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(503);
    expect(error.message).toBe('the Docker engine does not answer');
    expect(error.engineUnavailable).toBe(true);
    expect(error.missing).toBe(false);
  });

  it('says the server extension is missing for an HTML 404', async () => {
    const error = await errorFromResponse(
      fakeResponse({ status: 404, body: '<html>404</html>' })
    );
    expect(error.missing).toBe(true);
    expect(error.message).toBe(MISSING_EXTENSION_MESSAGE);
  });

  it('an API 404 (unknown id) is not a missing extension', async () => {
    const error = await errorFromResponse(
      fakeResponse({
        status: 404,
        body: { message: 'no job x', reason: 'NotFound' }
      })
    );
    expect(error.missing).toBe(false);
    expect(error.message).toBe('no job x');
  });
});

describe('requestAPI', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  it('calls {base_url}jupyter-ptcuda/<endpoint> and parses JSON', async () => {
    server.on('GET', 'kernels', {
      body: [{ kernel_id: 'k', gpus: [], in_container: false }]
    });
    const data = await requestAPI<any[]>('kernels', {}, server.settings);
    expect(data[0].kernel_id).toBe('k');
    expect(server.requests[0].url.pathname).toBe('/jupyter-ptcuda/kernels');
  });

  it('rejects with the API error', async () => {
    server.on('POST', 'jobs', {
      status: 400,
      body: { message: "'path' is required", reason: 'ConfigError' }
    });
    await expect(
      requestAPI('jobs', { method: 'POST', body: '{}' }, server.settings)
    ).rejects.toMatchObject({
      status: 400,
      reason: 'ConfigError',
      message: "'path' is required"
    });
  });
});
