/**
 * The notices poller: a notice from the broker (an idle GPU kernel shut down) is shown once, with
 * its message and a way to its notebook; a later poll asks only for what changed, a reload does
 * not show it again, and polling stops when the server extension is not there.
 */
import { INotice, noticeLook, NoticesPoller } from '../notices';
import { FakeServer } from './fakeserver';

const notice: INotice = {
  kind: 'idle_gpu_kernel',
  state: 'requested',
  message:
    'Kernel 1234abcd (work/train.ipynb) held GPU 0 without using it for 30 min, so it was shut down',
  kernel_id: '1234abcd-0000',
  notebook: 'work/train.ipynb',
  gpus: ['0'],
  idle_s: 1800,
  at: 1000.5,
  updated: 1000.5
};

function memoryStorage() {
  const items = new Map<string, string>();
  return {
    getItem: (k: string) => items.get(k) ?? null,
    setItem: (k: string, v: string) => void items.set(k, v)
  };
}

describe('NoticesPoller', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  it('shows a notice once, with its message and its notebook, and then asks only for what changed', async () => {
    const done = { ...notice, state: 'done' as const, updated: 1003 };
    server.on(
      'GET',
      'notices',
      { body: { notices: [notice] } },
      { body: { notices: [done] } },
      { body: { notices: [] } }
    );
    const shown: Array<[string, boolean]> = [];
    const opened: string[] = [];
    const poller = new NoticesPoller({
      serverSettings: server.settings,
      notify: (n, open) => {
        shown.push([n.message, !!open]);
        open?.();
      },
      openNotebook: path => opened.push(path),
      storage: memoryStorage()
    });
    expect(await poller.poll()).toHaveLength(1);
    expect(shown).toEqual([[notice.message, true]]);
    expect(opened).toEqual(['work/train.ipynb']);
    expect(await poller.poll()).toHaveLength(0); // same notice, now done: not shown again
    await poller.poll();
    expect(shown).toHaveLength(1);
    const since = server.requests.map(r => r.url.searchParams.get('since'));
    expect(since).toEqual(['0', '1000.5', '1003']);
  });

  it('a kernel waiting for a node is shown once and that notification then says it started', async () => {
    const waiting: INotice = {
      kind: 'kernel_pending',
      state: 'waiting',
      message:
        'The kernel for work/train.ipynb is waiting for a node: FailedScheduling: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu. It is given up after 300 s (ask for fewer GPUs or less memory, or wait for a free node).',
      kernel_id: '99aa',
      notebook: 'work/train.ipynb',
      at: 3000,
      updated: 3000
    };
    const started: INotice = {
      ...waiting,
      state: 'started',
      message:
        'The kernel for work/train.ipynb started after waiting 41 s for a node.',
      updated: 3041
    };
    server.on(
      'GET',
      'notices',
      { body: { notices: [waiting] } },
      { body: { notices: [waiting] } }, // unchanged: nothing to do
      { body: { notices: [started] } }
    );
    const shown: string[] = [];
    const updates: Array<[string, string]> = [];
    const poller = new NoticesPoller({
      serverSettings: server.settings,
      notify: n => {
        shown.push(n.message);
        return 'note-1';
      },
      update: (id, n) => void updates.push([id, n.message]),
      storage: memoryStorage()
    });
    await poller.poll();
    await poller.poll();
    expect(updates).toEqual([]);
    await poller.poll();
    expect(shown).toEqual([waiting.message]); // one notification, not two
    expect(updates).toEqual([['note-1', started.message]]);
    expect(noticeLook(waiting)).toEqual({ type: 'warning', autoClose: false });
    expect(noticeLook(started)).toEqual({ type: 'success', autoClose: 8000 });
    expect(noticeLook({ ...waiting, state: 'failed' })).toEqual({
      type: 'error',
      autoClose: false
    });
  });

  it('does not show a notice again after a page reload', async () => {
    server.on('GET', 'notices', { body: { notices: [notice] } });
    const storage = memoryStorage();
    const shown: string[] = [];
    const options = {
      serverSettings: server.settings,
      notify: (n: INotice) => void shown.push(n.message),
      storage
    };
    await new NoticesPoller(options).poll();
    await new NoticesPoller(options).poll(); // the reloaded page
    expect(shown).toEqual([notice.message]);
  });

  it('a notice without a notebook has no link; a network error is retried at the next poll', async () => {
    const bare = { ...notice, notebook: null, at: 2000, updated: 2000 };
    server.on(
      'GET',
      'notices',
      { status: 500, body: { message: 'boom', reason: 'EngineError' } },
      { body: { notices: [bare] } }
    );
    const shown: boolean[] = [];
    const poller = new NoticesPoller({
      serverSettings: server.settings,
      notify: (_n, open) => void shown.push(!!open),
      openNotebook: () => undefined,
      storage: null
    });
    expect(await poller.poll()).toEqual([]);
    expect(poller.stopped).toBe(false);
    expect(await poller.poll()).toHaveLength(1);
    expect(shown).toEqual([false]);
  });

  it('stops polling when the server extension is not there', async () => {
    const poller = new NoticesPoller({
      serverSettings: server.settings,
      notify: () => undefined,
      storage: null
    });
    expect(await poller.poll()).toEqual([]); // the fake server answers 404 HTML for unknown routes
    expect(poller.stopped).toBe(true);
    await poller.poll();
    expect(server.requests).toHaveLength(1);
  });
});

describe('an image pull in the kernel-start notice', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  const pulling = (
    percent: number,
    done: number,
    updated: number
  ): INotice => ({
    kind: 'kernel_image',
    state: 'waiting',
    message: `The kernel for train.ipynb waits for its image reg.example:5000/ml/torch:2: pulling ${percent}% (${done} of 2.8 GB). It is given up after 900 s.`,
    progress: {
      done: done * 1e9,
      total: 2.8e9,
      percent,
      layers: 5,
      waiting: 0,
      extracted: 0
    },
    kernel_id: 'k1',
    notebook: 'train.ipynb',
    at: 5000,
    updated
  });

  it('updates one notification as the percentage grows, then says pulled; polls fast only meanwhile', async () => {
    const pulled: INotice = {
      ...pulling(100, 2.8, 5009),
      state: 'started',
      message:
        'The kernel for train.ipynb: image reg.example:5000/ml/torch:2 pulled in 9 s; the kernel is starting.',
      progress: undefined
    };
    server.on(
      'GET',
      'notices',
      { body: { notices: [pulling(12, 0.3, 5001)] } },
      { body: { notices: [pulling(43, 1.2, 5004)] } },
      { body: { notices: [pulled] } }
    );
    const shown: string[] = [];
    const updates: string[] = [];
    const poller = new NoticesPoller({
      serverSettings: server.settings,
      notify: n => {
        shown.push(n.message);
        return 'note-1';
      },
      update: (_id, n) => void updates.push(n.message),
      storage: memoryStorage()
    });
    expect(poller.delay).toBe(10000);
    await poller.poll();
    expect(shown).toHaveLength(1);
    expect(shown[0]).toContain('pulling 12% (0.3 of 2.8 GB)');
    expect(noticeLook(pulling(12, 0.3, 5001)).type).toBe('in-progress');
    expect(poller.delay).toBe(1000); // the pull moves: ask every second
    await poller.poll();
    await poller.poll();
    expect(shown).toHaveLength(1); // one notification, updated in place
    expect(updates).toEqual([
      expect.stringContaining('pulling 43% (1.2 of 2.8 GB)'),
      expect.stringContaining('pulled in 9 s')
    ]);
    expect(noticeLook(pulled)).toEqual({ type: 'success', autoClose: 8000 });
    expect(poller.delay).toBe(10000); // back to the slow pace once it has started
    poller.dispose();
  });
});
