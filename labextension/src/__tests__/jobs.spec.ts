import { isTerminal, JobLogModel, JobsModel } from '../jobs';
import { FakeServer } from './fakeserver';

const enc = (s: string) => new TextEncoder().encode(s);

describe('JobLogModel', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  function log(chunk: Uint8Array, state: string, next: number) {
    return {
      bytes: chunk,
      headers: {
        'X-Ptcuda-Job-State': state,
        'X-Ptcuda-Log-Offset': String(next)
      }
    };
  }

  it('reads the log from the offset the server gives, until the job has ended', async () => {
    server.on(
      'GET',
      'jobs/j1/log',
      log(enc('epoch 0\n'), 'running', 8),
      log(enc('epoch 1\n'), 'completed', 16),
      log(enc(''), 'completed', 16)
    );
    const model = new JobLogModel('j1', {
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    expect(model.text).toBe('epoch 0\n');
    expect(model.state).toBe('running');
    expect(model.done).toBe(false);
    await model.fetch();
    expect(model.done).toBe(false); // ended, but read once more to be sure nothing is left
    await model.fetch();
    expect(model.done).toBe(true);
    expect(model.text).toBe('epoch 0\nepoch 1\n');
    const offsets = server.requests.map(r => r.url.searchParams.get('offset'));
    expect(offsets).toEqual(['0', '8', '16']);
    model.dispose();
  });

  it('decodes a character split between two reads', async () => {
    const bytes = enc('température 42 °C\n');
    const cut = bytes.indexOf(0xc3) + 1; // inside "é"
    server.on(
      'GET',
      'jobs/j2/log',
      log(bytes.slice(0, cut), 'running', cut),
      log(bytes.slice(cut), 'completed', bytes.length),
      log(enc(''), 'completed', bytes.length)
    );
    const model = new JobLogModel('j2', {
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    await model.fetch();
    await model.fetch();
    expect(model.text).toBe('température 42 °C\n');
    expect(model.offset).toBe(bytes.length);
    model.dispose();
  });

  it('stops when the job is gone (404)', async () => {
    server.on('GET', 'jobs/j3/log', {
      status: 404,
      body: { message: "no job 'j3'", reason: 'NotFound' }
    });
    const model = new JobLogModel('j3', {
      serverSettings: server.settings,
      autoStart: false
    });
    await expect(model.fetch()).rejects.toMatchObject({ status: 404 });
    expect(model.done).toBe(true);
    expect(model.error).toBe("no job 'j3'");
    model.dispose();
  });

  it('keeps only the tail of a long log', async () => {
    server.on('GET', 'jobs/j4/log', log(enc('0123456789'), 'running', 10));
    const model = new JobLogModel('j4', {
      serverSettings: server.settings,
      autoStart: false,
      maxChars: 4
    });
    await model.fetch();
    expect(model.text).toBe('6789');
    model.dispose();
  });
});

describe('JobsModel', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  it('lists, submits and cancels jobs', async () => {
    server.on('GET', 'jobs', {
      body: [{ id: 'old', state: 'completed', exit_code: 0 }]
    });
    server.on('POST', 'jobs', {
      status: 201,
      body: { id: 'new', state: 'running' }
    });
    server.on('DELETE', 'jobs/new', {
      status: 202,
      body: { id: 'new', state: 'running', cancel_requested: true }
    });
    const model = new JobsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    expect(model.jobs.map(j => j.id)).toEqual(['old']);
    const job = await model.submit({
      path: 'n.ipynb',
      gpus: 'none',
      params: {}
    });
    expect(job.id).toBe('new');
    expect(model.jobs.map(j => j.id)).toEqual(['new', 'old']);
    await model.cancel('new');
    expect(model.job('new')!.cancel_requested).toBe(true);
    const del = server.requests.find(r => r.method === 'DELETE')!;
    expect(del.url.pathname).toBe('/jupyter-ptcuda/jobs/new');
    model.dispose();
  });

  it('keeps the error when jobs cannot be submitted (no Docker engine)', async () => {
    server.on('POST', 'jobs', {
      status: 503,
      body: {
        message: 'the Docker engine does not answer',
        reason: 'EngineUnavailable'
      }
    });
    const model = new JobsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    await expect(model.submit({ path: 'n.ipynb' })).rejects.toMatchObject({
      status: 503,
      engineUnavailable: true
    });
    model.dispose();
  });

  it('knows the terminal states', () => {
    expect(
      ['completed', 'failed', 'cancelled', 'timed_out'].every(isTerminal)
    ).toBe(true);
    expect(isTerminal('running')).toBe(false);
    expect(isTerminal(null)).toBe(false);
  });
});
