import { Signal } from '@lumino/signaling';

import { ActiveKernel, PROVISIONER_NAME } from '../activekernel';
import { GpuModel } from '../model';
import { sparklinePaths } from '../widgets/sparkline';
import { statusText } from '../widgets/statusitem';
import { FakeServer, gpusReply } from './fakeserver';

describe('sparklinePaths', () => {
  it('scales values into the box, oldest on the left, and breaks at nulls', () => {
    const segments = sparklinePaths([0, 100, null, 50, 50], 100, 40, 10);
    expect(segments).toHaveLength(2);
    expect(segments[0].d).toBe('M0.0,10.0 L10.0,0.0');
    expect(segments[1]).toEqual({ d: 'M30.0,5.0 L40.0,5.0', x0: 30, x1: 40 });
  });

  it('draws nothing without data or without a scale', () => {
    expect(sparklinePaths([], 100, 40, 10)).toEqual([]);
    expect(sparklinePaths([1, 2], 0, 40, 10)).toEqual([]);
  });
});

describe('statusText', () => {
  let server: FakeServer;
  let model: GpuModel;
  beforeEach(async () => {
    server = new FakeServer();
    server.on('GET', 'gpus', { body: gpusReply({ gpus: 2 }) });
    server.on('GET', 'kernels', {
      body: [
        {
          kernel_id: 'gpu-kernel',
          gpus: ['1'],
          in_container: true,
          container_id: 'c1',
          image: 'img'
        },
        {
          kernel_id: 'cpu-kernel',
          gpus: [],
          in_container: true,
          container_id: 'c2',
          image: 'img:cpu'
        },
        { kernel_id: 'local', gpus: [], in_container: false }
      ]
    });
    model = new GpuModel({ serverSettings: server.settings, autoStart: false });
    await model.fetch();
  });
  afterEach(() => {
    model.dispose();
    server.restore();
  });

  it("shows the active kernel's GPU and memory", () => {
    expect(statusText(model, 'gpu-kernel')!.text).toBe(
      'GPU 1 · 10.0 / 80.0 GiB'
    );
  });

  it('says a container kernel has no GPU, and hides for other kernels', () => {
    expect(statusText(model, 'cpu-kernel')!.text).toBe('GPU: none');
    expect(statusText(model, 'local')).toBeNull();
    expect(statusText(model, null)).toBeNull();
  });
});

describe('ActiveKernel', () => {
  it('works without a notebook tracker', () => {
    const active = new ActiveKernel(null);
    expect(active.kernelId).toBeNull();
    expect(active.path).toBeNull();
    expect(active.isContainerKernel).toBe(false);
  });

  function fakePanel(kernelName: string) {
    const owner = {};
    return {
      context: { path: 'work/a.ipynb' },
      sessionContext: {
        session: { kernel: { id: `id-${kernelName}`, name: kernelName } },
        kernelChanged: new Signal(owner),
        sessionChanged: new Signal(owner),
        statusChanged: new Signal(owner)
      }
    };
  }

  it("follows the current notebook and knows a container kernel by its spec's provisioner", () => {
    const owner = {};
    const tracker: any = {
      currentWidget: fakePanel('ptcuda'),
      currentChanged: new Signal(owner)
    };
    const specs: any = {
      specsChanged: new Signal(owner),
      specs: {
        kernelspecs: {
          ptcuda: {
            metadata: {
              kernel_provisioner: { provisioner_name: PROVISIONER_NAME }
            }
          },
          python3: { metadata: {} }
        }
      }
    };
    const active = new ActiveKernel(tracker, specs);
    let changes = 0;
    active.changed.connect(() => changes++);
    expect(active.kernelId).toBe('id-ptcuda');
    expect(active.path).toBe('work/a.ipynb');
    expect(active.isContainerKernel).toBe(true);
    tracker.currentWidget = fakePanel('python3');
    tracker.currentChanged.emit(tracker.currentWidget);
    expect(changes).toBe(1);
    expect(active.kernelId).toBe('id-python3');
    expect(active.isContainerKernel).toBe(false);
  });
});
