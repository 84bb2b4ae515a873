/**
 * A notebook job's figures: the model lists them (`GET jobs/<id>/figures`) and loads each PNG,
 * and the Jobs view shows them under the selected job's log.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import { JobFiguresModel, JobsModel } from '../jobs';
import { JobFigures, JobsView } from '../widgets/jobsview';
import { FakeServer } from './fakeserver';

const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0]);
const FIGURES = [
  {
    name: 'cell-2-1.png',
    cell: 2,
    index: 1,
    size: 9,
    path: 'nb/outputs/j1/artifacts/figures/cell-2-1.png'
  },
  {
    name: 'cell-4-1.png',
    cell: 4,
    index: 1,
    size: 9,
    path: 'nb/outputs/j1/artifacts/figures/cell-4-1.png'
  }
];

function dom(element: React.ReactElement): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = renderToStaticMarkup(element);
  return div;
}

describe('JobFiguresModel', () => {
  let server: FakeServer;
  let urls: string[];
  beforeEach(() => {
    server = new FakeServer();
    urls = [];
    (URL as any).createObjectURL = jest.fn((blob: Blob) => {
      const url = `blob:fake/${urls.length}-${blob.type}`;
      urls.push(url);
      return url;
    });
    (URL as any).revokeObjectURL = jest.fn();
  });
  afterEach(() => server.restore());

  function figures(list: unknown[], state: string) {
    return { body: list, headers: { 'X-Ptcuda-Job-State': state } };
  }

  it('lists the figures, loads each PNG once, and stops after the job has ended', async () => {
    server
      .on(
        'GET',
        'jobs/j1/figures',
        figures(FIGURES.slice(0, 1), 'running'),
        figures(FIGURES, 'completed')
      )
      .on('GET', 'jobs/j1/figures/cell-2-1.png', { bytes: PNG })
      .on('GET', 'jobs/j1/figures/cell-4-1.png', { bytes: PNG });
    const model = new JobFiguresModel('j1', {
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    expect(model.figures.map(f => f.name)).toEqual(['cell-2-1.png']);
    expect(model.src('cell-2-1.png')).toBe('blob:fake/0-image/png');
    expect(model.done).toBe(false);
    await model.fetch();
    expect(model.figures.map(f => f.name)).toEqual([
      'cell-2-1.png',
      'cell-4-1.png'
    ]);
    expect(model.done).toBe(true);
    const images = server.requests
      .map(r => r.url.pathname)
      .filter(p => p.endsWith('.png'));
    expect(images).toEqual([
      '/jupyter-ptcuda/jobs/j1/figures/cell-2-1.png',
      '/jupyter-ptcuda/jobs/j1/figures/cell-4-1.png'
    ]);
    model.dispose();
    expect(URL.revokeObjectURL).toHaveBeenCalledTimes(2);
  });

  it('says why a figure could not be loaded', async () => {
    server
      .on('GET', 'jobs/j2/figures', figures(FIGURES.slice(0, 1), 'completed'))
      .on('GET', 'jobs/j2/figures/cell-2-1.png', {
        status: 403,
        body: { message: 'not a PNG image the job wrote', reason: 'UnsafePath' }
      });
    const model = new JobFiguresModel('j2', {
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    expect(model.src('cell-2-1.png')).toBeNull();
    expect(model.error).toContain('not a PNG image the job wrote');
    model.dispose();
  });
});

describe('Jobs view', () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
    (URL as any).createObjectURL = jest.fn(() => 'blob:fake/figure');
    (URL as any).revokeObjectURL = jest.fn();
  });
  afterEach(() => server.restore());

  it("shows the selected job's figures with their cell numbers", async () => {
    server
      .on('GET', 'jobs', {
        body: [{ id: 'j1', name: 'plots', state: 'completed', exit_code: 0 }]
      })
      .on('GET', 'jobs/j1/log', {
        bytes: new TextEncoder().encode(''),
        headers: { 'X-Ptcuda-Job-State': 'completed' }
      })
      .on('GET', 'jobs/j1/figures', {
        body: FIGURES,
        headers: { 'X-Ptcuda-Job-State': 'completed' }
      })
      .on('GET', 'jobs/j1/figures/cell-2-1.png', { bytes: PNG })
      .on('GET', 'jobs/j1/figures/cell-4-1.png', { bytes: PNG });
    const model = new JobsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    const openFile = jest.fn();
    const view = new JobsView(model, {
      serverSettings: server.settings,
      openPath: () => undefined,
      openFile,
      autoStart: false
    });
    view.select('j1');
    await view.figures!.fetch();
    const tree = (view as any).render();
    // a figure's "open" link opens the file itself (not only the file browser at its folder)
    const figures = React.Children.toArray(tree.props.children).find(
      (child: any) => child?.type === JobFigures
    ) as any;
    expect(figures.props.onOpen).toBe(openFile);
    const node = dom(tree);
    const shown = node.querySelectorAll('.jp-ptcuda-JobFigure');
    expect(shown).toHaveLength(2);
    expect(node.querySelector('.jp-ptcuda-JobFigures h3')!.textContent).toBe(
      'Figures (2)'
    );
    const img = shown[1].querySelector('img')!;
    expect(img.getAttribute('src')).toBe('blob:fake/figure');
    expect(img.getAttribute('alt')).toBe('cell 4, figure 1');
    expect(shown[0].getAttribute('data-name')).toBe('cell-2-1.png');
    view.dispose();
    model.dispose();
  });

  it('shows nothing for a job without figures, and "loading" before an image arrives', () => {
    expect(
      dom(<JobFigures figures={[]} src={() => null} onOpen={() => undefined} />)
        .innerHTML
    ).toBe('');
    const node = dom(
      <JobFigures
        figures={FIGURES.slice(0, 1)}
        src={() => null}
        onOpen={() => undefined}
      />
    );
    expect(node.textContent).toContain('loading cell-2-1.png');
    expect(node.textContent).toContain('cell 2, figure 1');
  });

  it("offers a terminal in a running job's container, and none for a finished one", async () => {
    server.on('GET', 'jobs', {
      body: [
        { id: 'r1', name: 'train', state: 'running' },
        { id: 'd1', name: 'done', state: 'completed', exit_code: 0 }
      ]
    });
    const model = new JobsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    const opened: string[] = [];
    const view = new JobsView(model, {
      serverSettings: server.settings,
      openPath: () => undefined,
      openTerminal: id => opened.push(id),
      autoStart: false
    });
    const node = dom((view as any).render());
    const running = node.querySelector(
      '[data-job-id="r1"] .jp-ptcuda-JobRow-terminal'
    );
    expect(running?.textContent).toBe('Terminal');
    expect(
      node.querySelector('[data-job-id="d1"] .jp-ptcuda-JobRow-terminal')
    ).toBeNull();
    const without = new JobsView(model, {
      openPath: () => undefined,
      autoStart: false
    });
    expect(
      dom((without as any).render()).querySelector('.jp-ptcuda-JobRow-terminal')
    ).toBeNull();
    view.dispose();
    without.dispose();
    model.dispose();
  });
});
