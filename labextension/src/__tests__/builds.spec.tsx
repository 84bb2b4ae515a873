/**
 * Image builds in the GPU panel: while `jupyter ptcuda image build` runs, the panel says "building
 * IMAGE: step 4/6 installing packages…" with a step bar and the build's last line; finished builds
 * are not shown there.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import { BuildsModel, IBuild } from '../builds';
import { BuildsView } from '../widgets/panel';
import { FakeServer } from './fakeserver';

const running: IBuild = {
  id: 'b1',
  tag: 'jupyter-ptcuda/pytorch-kernel:latest',
  state: 'running',
  step: 4,
  steps: 6,
  step_name: 'installing packages',
  last_line: '[install] Collecting torch==2.11.0',
  message:
    'building jupyter-ptcuda/pytorch-kernel:latest: step 4/6 installing packages'
};

function dom(element: JSX.Element): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = renderToStaticMarkup(element);
  return div;
}

describe('BuildsView', () => {
  it('shows a running build: its step, a step bar and its last line', () => {
    const node = dom(<BuildsView builds={[running]} />);
    expect(node.querySelector('.jp-ptcuda-Build-message')!.textContent).toBe(
      'building jupyter-ptcuda/pytorch-kernel:latest: step 4/6 installing packages…'
    );
    const bar = node.querySelector('progress')!;
    expect([bar.getAttribute('value'), bar.getAttribute('max')]).toEqual([
      '3',
      '6'
    ]);
    expect(bar.getAttribute('aria-label')).toBe('step 4 of 6');
    expect(node.querySelector('.jp-ptcuda-Build-line')!.textContent).toBe(
      '[install] Collecting torch==2.11.0'
    );
  });

  it('shows nothing when no build runs (finished ones are not news here)', () => {
    const built: IBuild = {
      ...running,
      state: 'built',
      message: `built ${running.tag}`
    };
    expect(dom(<BuildsView builds={[built]} />).innerHTML).toBe('');
    expect(dom(<BuildsView builds={[]} />).innerHTML).toBe('');
  });
});

describe('BuildsModel', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });
  afterEach(() => server.restore());

  it('reads GET builds and tells its listeners', async () => {
    server.on('GET', 'builds', {
      body: { builds: [running, { ...running, id: 'b0', state: 'failed' }] }
    });
    const model = new BuildsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    let told = 0;
    model.changed.connect(() => told++);
    await model.fetch();
    expect(told).toBe(1);
    expect(model.running.map(b => b.id)).toEqual(['b1']);
    expect(server.requests[0].url.pathname).toBe('/jupyter-ptcuda/builds');
    model.dispose();
  });
});
