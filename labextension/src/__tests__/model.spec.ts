import { GpuModel } from '../model';
import { FakeServer, gpusReply } from './fakeserver';

describe('GpuModel', () => {
  let server: FakeServer;
  let model: GpuModel;

  beforeEach(() => {
    server = new FakeServer();
    model = new GpuModel({
      serverSettings: server.settings,
      autoStart: false,
      historyMinutes: 10
    });
  });

  afterEach(() => {
    model.dispose();
    server.restore();
  });

  it('reads the GPUs, their history and the kernels', async () => {
    server.on('GET', 'gpus', {
      body: gpusReply({ gpus: 2, times: [100, 101] })
    });
    server.on('GET', 'kernels', {
      body: [{ kernel_id: 'k1', gpus: ['0'], in_container: true }]
    });
    let changed = 0;
    model.changed.connect(() => changed++);
    await model.fetch();
    expect(model.status).toBe('ok');
    expect(model.snapshot!.gpus).toHaveLength(2);
    expect(model.history['GPU-1'].t).toEqual([100, 101]);
    expect(model.kernels[0].kernel_id).toBe('k1');
    expect(changed).toBe(1);
  });

  it('asks only for history newer than what it has, and appends it', async () => {
    server.on(
      'GET',
      'gpus',
      { body: gpusReply({ times: [100, 101] }) },
      { body: gpusReply({ times: [102] }) }
    );
    server.on('GET', 'kernels', { body: [] });
    await model.fetch();
    await model.fetch();
    const gpuRequests = server.requests.filter(r =>
      r.url.pathname.endsWith('/gpus')
    );
    expect(gpuRequests[0].url.searchParams.get('since')).toBeNull();
    expect(gpuRequests[1].url.searchParams.get('since')).toBe('101');
    expect(model.history['GPU-0'].t).toEqual([100, 101, 102]);
  });

  it('says when the host has no NVIDIA driver, with the reason', async () => {
    server.on('GET', 'gpus', {
      body: gpusReply({
        state: 'unavailable',
        reason: 'NVML library libnvidia-ml.so.1 not found'
      })
    });
    server.on('GET', 'kernels', { body: [] });
    await model.fetch();
    expect(model.status).toBe('unavailable');
    expect(model.snapshot!.reason).toContain('libnvidia-ml');
  });

  it('says the server extension is missing on a 404, and rejects so that the poll backs off', async () => {
    // no routes: jupyter_server's HTML 404
    await expect(model.fetch()).rejects.toMatchObject({ missing: true });
    expect(model.status).toBe('missing');
    expect(model.error).toContain('server extension');
  });

  it('reports other errors with their message', async () => {
    server.on('GET', 'gpus', {
      status: 500,
      body: { message: 'internal error (see the server log)', reason: 'error' }
    });
    server.on('GET', 'kernels', { body: [] });
    await expect(model.fetch()).rejects.toBeTruthy();
    expect(model.status).toBe('error');
    expect(model.error).toBe('internal error (see the server log)');
  });

  it('keeps the GPUs when only the kernel list fails', async () => {
    server.on('GET', 'gpus', { body: gpusReply({}) });
    server.on('GET', 'kernels', {
      status: 500,
      body: { message: 'boom', reason: 'error' }
    });
    await model.fetch();
    expect(model.status).toBe('ok');
    expect(model.kernels).toEqual([]);
  });

  it("finds a kernel's GPUs by index, uuid or holder, and its own memory", async () => {
    server.on('GET', 'gpus', {
      body: gpusReply({
        gpus: 3,
        holders: { 2: [{ kind: 'kernel', id: 'k3' }] },
        processes: {
          1: [
            { pid: 5, used_memory: 3 * 1024 ** 3, owner: 'k2', kind: 'kernel' }
          ]
        }
      })
    });
    server.on('GET', 'kernels', {
      body: [
        { kernel_id: 'k1', gpus: ['0'], in_container: true },
        { kernel_id: 'k2', gpus: ['GPU-1'], in_container: true },
        { kernel_id: 'k3', gpus: [], in_container: true }
      ]
    });
    await model.fetch();
    expect(model.kernelGpus('k1').map(g => g.index)).toEqual([0]);
    expect(model.kernelGpus('k2').map(g => g.index)).toEqual([1]);
    expect(model.kernelGpus('k3').map(g => g.index)).toEqual([2]);
    expect(model.kernelGpus('nope')).toEqual([]);
    expect(model.kernelMemory('k2')).toBe(3 * 1024 ** 3);
    expect(model.kernelMemory('k1')).toBeNull();
  });

  it('polls fast while the panel is visible, slowly for the status bar, and stands by otherwise', () => {
    model.refreshInterval = 1000;
    model.statusBarInterval = 8000;
    const standby = (model.poll.standby as () => boolean | string)();
    expect(standby).toBe(true); // nothing shows the data
    model.statusBarEnabled = true;
    expect(model.poll.frequency.interval).toBe(8000);
    expect((model.poll.standby as () => boolean | string)()).toBe(
      'when-hidden'
    );
    model.panelVisible = true;
    expect(model.poll.frequency.interval).toBe(1000);
    expect(model.poll.frequency.backoff).toBe(true);
    model.panelVisible = false;
    model.statusBarEnabled = false;
    expect((model.poll.standby as () => boolean | string)()).toBe(true);
  });
});
