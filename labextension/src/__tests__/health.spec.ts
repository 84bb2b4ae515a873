import { countChecks, errorTitle, HealthModel, sortChecks } from '../health';
import { ICheck } from '../tokens';
import { FakeServer } from './fakeserver';

const checks: ICheck[] = [
  { id: 'a', title: 'A', status: 'pass' },
  { id: 'b', title: 'B', status: 'skip' },
  { id: 'c', title: 'C', status: 'fail', remediation: 'install a CUDA build' },
  { id: 'd', title: 'D', status: 'warn' },
  { id: 'e', title: 'E', status: 'fail' }
];

describe('sortChecks', () => {
  it('puts failures first, then warnings, passes and skips, keeping order within each', () => {
    expect(sortChecks(checks).map(c => c.id)).toEqual([
      'c',
      'e',
      'd',
      'a',
      'b'
    ]);
  });

  it('counts each status', () => {
    expect(countChecks(checks)).toEqual({ fail: 2, warn: 1, pass: 1, skip: 1 });
  });
});

describe('errorTitle', () => {
  it('says plainly that the Docker engine is not available', () => {
    expect(errorTitle('EngineUnavailable')).toBe('Docker engine not available');
    expect(errorTitle(null)).toBe('Health check failed to run');
  });
});

describe('HealthModel', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  it('starts a check and follows it until it is done', async () => {
    const running = {
      id: 'h1',
      state: 'running',
      created: 1,
      target: { image: 'img' },
      report: null,
      error: null
    };
    const done = {
      ...running,
      state: 'done',
      report: {
        schema: 1,
        summary: 'fail',
        checks,
        cuda: { available: false, reason: 'CPU-only torch build' }
      }
    };
    server.on('POST', 'health', {
      status: 201,
      body: running,
      headers: { Location: '/jupyter-ptcuda/health/h1' }
    });
    server.on('GET', 'health/h1', { body: running }, { body: done });
    const model = new HealthModel({
      serverSettings: server.settings,
      pollInterval: 1
    });
    const seen: string[] = [];
    model.changed.connect(() => seen.push(model.checks[0]?.state ?? ''));
    const result = await model.run({ image: 'img', gpus: 'none' });
    expect(result.state).toBe('done');
    expect(result.report!.summary).toBe('fail');
    expect(seen[0]).toBe('running');
    expect(model.checks).toHaveLength(1);
    expect(model.running).toBe(false);
    expect(server.requests[0].body).toEqual({ image: 'img', gpus: 'none' });
  });

  it('keeps the error of a check that could not run (no Docker engine)', async () => {
    const running = {
      id: 'h2',
      state: 'running',
      created: 1,
      target: { image: 'img' }
    };
    const failed = {
      ...running,
      state: 'error',
      error: {
        message: 'the Docker engine does not answer',
        reason: 'EngineUnavailable'
      }
    };
    server.on('POST', 'health', { status: 201, body: running });
    server.on('GET', 'health/h2', { body: failed });
    const model = new HealthModel({
      serverSettings: server.settings,
      pollInterval: 1
    });
    const result = await model.run({ image: 'img' });
    expect(result.state).toBe('error');
    expect(result.error!.reason).toBe('EngineUnavailable');
  });

  it('keeps the reason a check could not start', async () => {
    server.on('POST', 'health', {
      status: 404,
      body: { message: "no kernel 'k' on this server", reason: 'NotFound' }
    });
    const model = new HealthModel({
      serverSettings: server.settings,
      pollInterval: 1
    });
    await expect(model.run({ kernel_id: 'k' })).rejects.toMatchObject({
      status: 404
    });
    expect(model.startError!.message).toBe("no kernel 'k' on this server");
    expect(model.checks).toHaveLength(0);
  });
});

describe('HealthModel.load', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  it("shows the server's recent checks and follows the running ones", async () => {
    const done = {
      id: 'old',
      state: 'done',
      created: 1,
      target: { image: 'a' },
      report: null
    };
    const running = {
      id: 'new',
      state: 'running',
      created: 2,
      target: { image: 'b' }
    };
    server.on('GET', 'health', { body: [done, running] });
    server.on('GET', 'health/new', {
      body: {
        ...running,
        state: 'error',
        error: { message: 'x', reason: null }
      }
    });
    const model = new HealthModel({
      serverSettings: server.settings,
      pollInterval: 1
    });
    const finished = new Promise<void>(resolve =>
      model.changed.connect(() => {
        if (model.checks[0]?.state === 'error') {
          resolve();
        }
      })
    );
    await model.load();
    expect(model.checks.map(c => c.id)).toEqual(['new', 'old']);
    await finished;
    expect(model.running).toBe(false);
  });

  it('clears finished checks, and they stay cleared after a reload', async () => {
    window.localStorage.clear();
    const done = (id: string, created: number) => ({
      id,
      state: 'done',
      created,
      target: { kernel_id: 'k', notebook: 'a.ipynb' },
      report: null
    });
    server.on('GET', 'health', { body: [done('one', 1), done('two', 2)] });
    const model = new HealthModel({ serverSettings: server.settings });
    expect(model.loaded).toBe(false);
    await model.load();
    expect(model.loaded).toBe(true);
    expect(model.checks).toHaveLength(2);
    model.clear();
    expect(model.checks).toHaveLength(0);
    // a reload: a new model, the server still has both and one newer check
    server.on('GET', 'health', {
      body: [done('one', 1), done('two', 2), done('three', 3)]
    });
    const reloaded = new HealthModel({ serverSettings: server.settings });
    await reloaded.load();
    expect(reloaded.checks.map(c => c.id)).toEqual(['three']);
  });

  it('ignores a server without the extension', async () => {
    const model = new HealthModel({ serverSettings: server.settings });
    await model.load();
    expect(model.checks).toEqual([]);
  });
});
