/**
 * The GPU queue in JupyterLab (issue 23): a queued job's state, place, reason and time waited in the
 * Jobs view (the time ticks without asking the server again), cancelling it while it waits; the GPU
 * panel's "Waiting for GPUs" list (`GET queue`, only while the panel is shown: the user's own requests
 * named, another user's not); a kernel's "waiting for a GPU" notice, polled fast while it waits, updated in place to "started".
 */
import * as React from 'react';
import { act } from 'react';
import { createRoot } from 'react-dom/client';
import { renderToStaticMarkup } from 'react-dom/server';

import { formatGpuAsk, formatPlace, formatWaited } from '../format';
import { JobsModel } from '../jobs';
import { GpuModel } from '../model';
import { INotice, NoticesPoller } from '../notices';
import { IJob, IQueueEntry } from '../tokens';
import { JobsView } from '../widgets/jobsview';
import { Elapsed, WaitingList } from '../widgets/waiting';
import { FakeServer, gpusReply } from './fakeserver';

const QUEUED: IJob = {
  id: 'q1',
  name: 'train-lr0.01',
  state: 'queued',
  gpus: 'count:1',
  place: 3,
  waited_s: 65,
  reason:
    'waiting for 1 GPU: 2 requests ahead of you; GPUs held by your job train-lr0.1 and another user'
};
const RUNNING: IJob = {
  id: 'r1',
  name: 'train-lr0.1',
  state: 'running',
  gpus: '0',
  place: null,
  waited_s: 0
};

function html(element: React.ReactElement | null): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = element ? renderToStaticMarkup(element) : '';
  return div;
}

describe('queue formatting', () => {
  it('says a place as its user reads it', () => {
    expect(formatPlace(1)).toBe('next in line');
    expect(formatPlace(3)).toBe('2 ahead of you');
    expect(formatPlace(null)).toBe('');
  });

  it('says what a request asks for', () => {
    expect(formatGpuAsk('count:1')).toBe('1 GPU');
    expect(formatGpuAsk('count:4')).toBe('4 GPUs');
    expect(formatGpuAsk('1')).toBe('GPU 1');
    expect(formatGpuAsk('0,1')).toBe('GPUs 0, 1');
  });

  it('says how long something waited, to the second', () => {
    expect(formatWaited(8.9)).toBe('8 s');
    expect(formatWaited(65)).toBe('1 min 05 s');
    expect(formatWaited(7380)).toBe('2 h 03 min');
    expect(formatWaited(-3)).toBe('0 s');
  });
});

describe('Elapsed', () => {
  beforeEach(() => {
    (globalThis as any).IS_REACT_ACT_ENVIRONMENT = true;
    jest.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    jest.useRealTimers();
    (globalThis as any).IS_REACT_ACT_ENVIRONMENT = false;
  });

  it('ticks each second from what the server said, without asking again', () => {
    const div = document.createElement('div');
    const root = createRoot(div);
    act(() => root.render(<Elapsed seconds={58} at={Date.now()} />));
    expect(div.textContent).toBe('58 s');
    act(() => void jest.advanceTimersByTime(3000));
    expect(div.textContent).toBe('1 min 01 s');
    act(() => root.unmount()); // its timer goes with it
    expect(jest.getTimerCount()).toBe(0);
  });
});

describe('Jobs view: a queued job', () => {
  let server: FakeServer;
  let model: JobsModel;
  let view: JobsView;
  beforeEach(async () => {
    jest.useFakeTimers({ now: 2_000_000, doNotFake: ['queueMicrotask'] });
    server = new FakeServer();
    server.on('GET', 'jobs', { body: [QUEUED, RUNNING] });
    model = new JobsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    view = new JobsView(model, {
      serverSettings: server.settings,
      openPath: () => undefined,
      autoStart: false,
      confirm: false
    });
  });
  afterEach(() => {
    view.dispose();
    model.dispose();
    server.restore();
    jest.useRealTimers();
  });

  const dom = () => html((view as any).render());

  it('shows its state, its place, why it waits and for how long', () => {
    const node = dom();
    const row = node.querySelector('.jp-ptcuda-JobRow[data-job-id="q1"]')!;
    expect(row.getAttribute('data-state')).toBe('queued');
    expect(row.querySelector('.jp-ptcuda-Badge')!.textContent).toBe('queued');
    expect(row.querySelector('.jp-ptcuda-JobRow-place')!.textContent).toBe(
      '2 ahead of you'
    );
    const waiting = node.querySelector(
      '.jp-ptcuda-JobRow-waiting[data-job-id="q1"]'
    )!;
    expect(waiting.textContent).toBe(`${QUEUED.reason} · waited 1 min 05 s`);
    // it spans the whole table (9 columns: no metric columns here)
    expect(waiting.querySelector('td')!.getAttribute('colspan')).toBe('9');
    // a running job has neither
    expect(
      node.querySelector(
        '.jp-ptcuda-JobRow[data-job-id="r1"] .jp-ptcuda-JobRow-place'
      )
    ).toBeNull();
    expect(
      node.querySelector('.jp-ptcuda-JobRow-waiting[data-job-id="r1"]')
    ).toBeNull();
    // the time goes on from when the list was read
    jest.advanceTimersByTime(10_000);
    expect(dom().querySelector('.jp-ptcuda-JobRow-waited')!.textContent).toBe(
      ' · waited 1 min 15 s'
    );
  });

  it('a queued job on Kubernetes (no place): the scheduler’s reason, no place', async () => {
    server.on('GET', 'jobs', {
      body: [
        {
          ...QUEUED,
          place: null,
          reason:
            'pending: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu'
        }
      ]
    });
    await model.fetch();
    const node = dom();
    expect(node.querySelector('.jp-ptcuda-JobRow-place')).toBeNull();
    expect(node.querySelector('.jp-ptcuda-JobRow-reason')!.textContent).toBe(
      'pending: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu'
    );
  });

  it('its log says nothing has run yet', async () => {
    server.on('GET', 'jobs/q1/log', {
      bytes: new Uint8Array(),
      headers: { 'X-Ptcuda-Job-State': 'queued', 'X-Ptcuda-Log-Offset': '0' }
    });
    view.select('q1');
    await view.log!.fetch();
    expect(
      dom().querySelector('.jp-ptcuda-JobLog-text')!.textContent
    ).toContain('Nothing has run yet');
  });

  it('cancels it while it waits, and says it left the queue', async () => {
    server.on('DELETE', 'jobs/q1', {
      status: 202,
      body: { ...QUEUED, cancel_requested: true }
    });
    server.on('GET', 'jobs', {
      body: [
        { ...QUEUED, state: 'cancelled', reason: 'cancelled', place: null },
        RUNNING
      ]
    });
    await (view as any)._cancel('q1');
    expect(
      server.requests
        .filter(r => r.method === 'DELETE')
        .map(r => r.url.pathname)
    ).toEqual(['/jupyter-ptcuda/jobs/q1']);
    expect(
      dom().querySelector('.jp-ptcuda-JobsView-message')!.textContent
    ).toBe(
      'Job train-lr0.01 cancelled while it waited: it left the GPU queue before it started.'
    );
    await model.fetch();
    const node = dom();
    expect(
      node
        .querySelector('.jp-ptcuda-JobRow[data-job-id="q1"]')!
        .getAttribute('data-state')
    ).toBe('cancelled');
    expect(node.querySelector('.jp-ptcuda-JobRow-waiting')).toBeNull();
    expect(
      node.querySelector(
        '.jp-ptcuda-JobRow[data-job-id="q1"] .jp-ptcuda-JobRow-cancel'
      )
    ).toBeNull();
  });
});

const LINE: IQueueEntry[] = [
  {
    id: 'k-1',
    what: 'kernel train.ipynb',
    place: 1,
    reason:
      'waiting for 1 GPU: next in line; GPUs held by your job a and another user',
    waited_s: 12,
    gpus: 'count:1'
  },
  {
    id: null,
    what: 'another user',
    place: 2,
    reason: null,
    waited_s: 3,
    gpus: 'count:2'
  },
  {
    id: 'j-9',
    what: 'job sweep-3',
    place: 3,
    reason: 'waiting for GPU 1: 2 requests ahead of you',
    waited_s: 1,
    gpus: '1'
  }
];

describe('GPU panel: the waiting list', () => {
  it('names the user’s own requests and not another user’s, in queue order, with what and how long', () => {
    const node = html(<WaitingList waiting={LINE} at={Date.now()} />);
    expect(node.querySelector('h2')!.textContent).toBe('Waiting for GPUs (3)');
    const items = [...node.querySelectorAll('.jp-ptcuda-Waiting-item')];
    expect(items.map(i => i.getAttribute('data-place'))).toEqual([
      '1',
      '2',
      '3'
    ]);
    expect(items.map(i => i.textContent)).toEqual([
      'kernel train.ipynb1 GPU · 12 s',
      'another user2 GPUs · 3 s',
      'job sweep-3GPU 1 · 1 s'
    ]);
    expect(items[0].classList).toContain('jp-ptcuda-Waiting-mine');
    expect(items[0].getAttribute('title')).toBe(LINE[0].reason);
    expect(items[1].classList).toContain('jp-ptcuda-Waiting-other');
    expect(items[1].getAttribute('title')).not.toContain('waiting for');
  });

  it('shows nothing at all when nothing waits', () => {
    expect(renderToStaticMarkup(<WaitingList waiting={[]} at={0} />)).toBe('');
  });
});

describe('GpuModel: GET queue', () => {
  let server: FakeServer;
  let model: GpuModel;
  beforeEach(() => {
    server = new FakeServer();
    server.on('GET', 'gpus', { body: gpusReply({ gpus: 2 }) });
    server.on('GET', 'kernels', { body: [] });
    model = new GpuModel({ serverSettings: server.settings, autoStart: false });
  });
  afterEach(() => {
    model.dispose();
    server.restore();
  });
  const asked = () =>
    server.requests.filter(r => r.url.pathname.endsWith('/queue')).length;

  it('reads the queue only while the panel is shown', async () => {
    server.on('GET', 'queue', { body: { enabled: true, waiting: LINE } });
    model.statusBarEnabled = true;
    await model.fetch();
    expect(asked()).toBe(0);
    expect(model.queue).toEqual([]);
    model.panelVisible = true;
    await model.fetch();
    expect(asked()).toBe(1);
    expect(model.queue.map(w => w.what)).toEqual([
      'kernel train.ipynb',
      'another user',
      'job sweep-3'
    ]);
    expect(model.queueReadAt).toBeGreaterThan(0);
  });

  it('a server without GET queue has an empty line; another error keeps the last one', async () => {
    model.panelVisible = true;
    await model.fetch(); // 404
    expect(model.status).toBe('ok');
    expect(model.queue).toEqual([]);
    server.on(
      'GET',
      'queue',
      { body: { enabled: true, waiting: LINE } },
      { status: 500, body: { message: 'boom' } }
    );
    await model.fetch();
    await model.fetch();
    expect(model.status).toBe('ok');
    expect(model.queue).toHaveLength(3);
  });
});

describe('NoticesPoller: a kernel waiting for a GPU', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  it('polls fast while a notice shown here waits, and updates it to "started"', async () => {
    const waiting: INotice = {
      kind: 'kernel_pending',
      state: 'waiting',
      message:
        'The kernel for train.ipynb is waiting for 1 GPU: 1 request ahead of you; GPUs held by your job a. It is given up after 120 s (shut it down to leave the line).',
      kernel_id: 'k-1',
      notebook: 'train.ipynb',
      at: 50,
      updated: 50
    };
    const started: INotice = {
      ...waiting,
      state: 'started',
      message:
        'The kernel for train.ipynb started after waiting 41 s for a GPU.',
      updated: 91
    };
    server.on(
      'GET',
      'notices',
      { body: { notices: [waiting] } },
      { body: { notices: [started] } }
    );
    const updates: string[] = [];
    const poller = new NoticesPoller({
      serverSettings: server.settings,
      notify: () => 'n-1',
      update: (id, n) => updates.push(`${id}: ${n.message}`),
      storage: null
    });
    expect(poller.delay).toBe(10000);
    await poller.poll();
    expect(poller.delay).toBe(1000);
    await poller.poll();
    expect(updates).toEqual([`n-1: ${started.message}`]);
    expect(poller.delay).toBe(10000);
  });
});
