/**
 * What the panel's components render (static markup): the active kernel's holder highlighted,
 * health failures first and the Docker engine named plainly, a message instead of a blank panel.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import { GpuModel } from '../model';
import { IGpu, IHealth } from '../tokens';
import { GpuCard } from '../widgets/gpucard';
import { HealthResult } from '../widgets/healthview';
import { StatusMessage } from '../widgets/panel';
import { FakeServer, gpusReply } from './fakeserver';

const gpu: IGpu = {
  index: 0,
  uuid: 'GPU-0',
  name: 'NVIDIA H100 80GB HBM3',
  state: 'ok',
  utilization_gpu: 42,
  memory_used: 8 * 1024 ** 3,
  memory_total: 80 * 1024 ** 3,
  temperature_c: 61,
  power_w: 300,
  power_limit_w: 700,
  holders: [
    {
      kind: 'kernel',
      id: 'k-active',
      notebook: 'work/train.ipynb',
      container: 'c1'
    },
    { kind: 'job', id: 'j1', notebook: '', container: 'c2' }
  ]
};
const series = {
  t: [1, 2, 3],
  util: [10, 40, 42],
  mem_used: [1, 2, 8],
  temp: [60, 61, 61],
  power: [1, 2, 3]
};

function dom(element: React.ReactElement): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = renderToStaticMarkup(element);
  return div;
}

describe('GpuCard', () => {
  it("highlights the active notebook's kernel among the holders", () => {
    const node = dom(
      <GpuCard gpu={gpu} series={series} activeKernelId="k-active" />
    );
    const active = node.querySelectorAll('.jp-ptcuda-Holder-active');
    expect(active).toHaveLength(1);
    expect(active[0].textContent).toContain('work/train.ipynb');
    expect(active[0].textContent).toContain('this notebook');
    expect(node.querySelector('.jp-ptcuda-GpuCard-active')).not.toBeNull();
    expect(node.querySelector('.jp-ptcuda-Holder-job')!.textContent).toContain(
      'job j1'
    );
  });

  it("shows another user's holders as 'another user', without an id or link", () => {
    const shared: IGpu = {
      ...gpu,
      holders: [
        { kind: 'other', id: '', owner: 'another user' },
        { kind: 'other', id: '', owner: 'another user' },
        { kind: 'kernel', id: 'k-mine', notebook: 'mine.ipynb' }
      ]
    };
    const node = dom(
      <GpuCard
        gpu={shared}
        series={series}
        activeKernelId="k-mine"
        onOpenNotebook={() => undefined}
      />
    );
    const others = node.querySelectorAll('.jp-ptcuda-Holder-other');
    expect(others).toHaveLength(2);
    expect(others[0].textContent).toBe('another user');
    expect(others[0].querySelector('a')).toBeNull();
    expect(others[0].getAttribute('title')).toBe(
      'Held by another user of this host'
    );
    expect(
      node.querySelector('.jp-ptcuda-Holder-active')!.textContent
    ).toContain('mine.ipynb');
  });

  it('shows the values and a chart of utilisation and memory', () => {
    const node = dom(
      <GpuCard gpu={gpu} series={series} activeKernelId={null} />
    );
    expect(node.textContent).toContain('42%');
    expect(node.textContent).toContain('8.0 / 80.0 GiB');
    expect(node.textContent).toContain('61 °C');
    expect(node.textContent).toContain('300 W / 700 W');
    expect(node.querySelectorAll('path.jp-ptcuda-Sparkline-line')).toHaveLength(
      2
    );
    expect(node.querySelector('.jp-ptcuda-Holder-active')).toBeNull();
  });
});

describe('HealthResult', () => {
  it('lists failures first, with their fix', () => {
    const entry: IHealth = {
      id: 'h',
      state: 'done',
      created: 1,
      target: { image: 'img:cpu' },
      report: {
        schema: 1,
        summary: 'fail',
        cuda: { available: false, reason: 'CPU-only torch build' },
        checks: [
          {
            id: 'torch',
            title: 'PyTorch imports',
            status: 'pass',
            value: '2.13.0+cpu'
          },
          {
            id: 'cuda',
            title: 'CUDA available to PyTorch',
            status: 'fail',
            value: false,
            remediation: 'install a CUDA build'
          },
          { id: 'nccl', title: 'NCCL', status: 'skip' }
        ]
      }
    };
    const node = dom(<HealthResult entry={entry} notebookOf={() => null} />);
    const rows = Array.from(node.querySelectorAll('.jp-ptcuda-Check')).map(r =>
      r.getAttribute('data-status')
    );
    expect(rows).toEqual(['fail', 'pass', 'skip']);
    expect(
      node.querySelector('.jp-ptcuda-Check-fail .jp-ptcuda-Check-remediation')!
        .textContent
    ).toContain('install a CUDA build');
    expect(node.querySelector('.jp-ptcuda-Badge-fail')!.textContent).toBe(
      'FAIL'
    );
    expect(node.textContent).toContain(
      'CUDA unavailable: CPU-only torch build'
    );
  });

  it('says plainly when there is no Docker engine', () => {
    const entry: IHealth = {
      id: 'h',
      state: 'error',
      created: 1,
      target: { image: 'img' },
      error: {
        message: 'the Docker engine does not answer',
        reason: 'EngineUnavailable'
      }
    };
    const node = dom(<HealthResult entry={entry} notebookOf={() => null} />);
    expect(node.querySelector('.jp-ptcuda-error')!.textContent).toContain(
      'Docker engine not available'
    );
    expect(node.querySelector('.jp-ptcuda-error')!.textContent).toContain(
      'the Docker engine does not answer'
    );
  });
});

describe('StatusMessage', () => {
  let server: FakeServer;
  let model: GpuModel;
  beforeEach(() => {
    server = new FakeServer();
    model = new GpuModel({ serverSettings: server.settings, autoStart: false });
  });
  afterEach(() => {
    model.dispose();
    server.restore();
  });

  it('says the server extension is missing', async () => {
    await model.fetch().catch(() => undefined);
    expect(dom(<StatusMessage model={model} />).textContent).toContain(
      'Server extension not available'
    );
  });

  it('says there is no NVIDIA driver, with the reason', async () => {
    server.on('GET', 'gpus', {
      body: gpusReply({
        state: 'unavailable',
        reason: 'NVML library libnvidia-ml.so.1 not found'
      })
    });
    server.on('GET', 'kernels', { body: [] });
    await model.fetch();
    const text = dom(<StatusMessage model={model} />).textContent!;
    expect(text).toContain('No NVIDIA driver on this host');
    expect(text).toContain('libnvidia-ml.so.1');
  });

  it('says nothing once the GPUs are listed', async () => {
    server.on('GET', 'gpus', { body: gpusReply({}) });
    server.on('GET', 'kernels', { body: [] });
    await model.fetch();
    expect(renderToStaticMarkup(<StatusMessage model={model} />)).toBe('');
  });
});
