/**
 * Jobs as MLflow runs in the Jobs view (issue 24): each job's parameters and the last value of each
 * metric its script logged, sorting by a metric, a chart of a metric across jobs, the link to the run
 * and the "Register model" button (`POST jobs/<id>/register`).
 */
import { renderToStaticMarkup } from 'react-dom/server';

import { JobsModel } from '../jobs';
import {
  formatMetric,
  metricColumns,
  metricKeys,
  runUrl,
  sortByMetric
} from '../runs';
import { IJob } from '../tokens';
import { JobsView } from '../widgets/jobsview';
import { FakeServer } from './fakeserver';

function job(
  id: string,
  metrics: { [k: string]: number } | null,
  extra: Partial<IJob> = {}
): IJob {
  return {
    id,
    name: `sweep-${id}`,
    state: 'completed',
    exit_code: 0,
    parameters: { lr: id === 'a' ? 0.1 : 0.01 },
    meta: metrics
      ? {
          mlflow: {
            run_id: `run-${id}`,
            experiment_id: '3',
            status: 'FINISHED',
            metrics,
            tracking_uri: 'sqlite:////home/u/.local/share/jupyter/mlflow.db'
          }
        }
      : {},
    ...extra
  };
}

const JOBS = [
  job('a', { loss: 0.5, acc: 0.8, 'system/gpu_0_utilization_percentage': 40 }),
  job('b', { loss: 0.125, acc: 0.9, 'job.duration_s': 12.5 }),
  job('c', null), // ran without MLflow
  job('d', { loss: 2 }, { state: 'running', exit_code: null }),
  job('e', {}, { state: 'failed', exit_code: 1 }) // its run has no artifacts yet
];
(JOBS[4].meta as any).mlflow.status = 'RUNNING';

function dom(view: JobsView): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = renderToStaticMarkup((view as any).render());
  return div;
}

describe('runs', () => {
  it("lists the script's metrics first, then the duration, then GPU telemetry", () => {
    expect(metricKeys(JOBS)).toEqual([
      'acc',
      'loss',
      'job.duration_s',
      'system/gpu_0_utilization_percentage'
    ]);
    expect(metricColumns(JOBS)).toEqual(['acc', 'loss']);
  });

  it('sorts by a metric either way; jobs without it stay last, in order', () => {
    const ids = (jobs: IJob[]) => jobs.map(j => j.id);
    expect(ids(sortByMetric(JOBS, 'loss'))).toEqual(['b', 'a', 'd', 'c', 'e']);
    expect(ids(sortByMetric(JOBS, 'loss', true))).toEqual([
      'd',
      'a',
      'b',
      'c',
      'e'
    ]);
    expect(ids(sortByMetric(JOBS, 'acc', true))).toEqual([
      'b',
      'a',
      'c',
      'd',
      'e'
    ]);
    expect(ids(sortByMetric(JOBS, null))).toEqual(['a', 'b', 'c', 'd', 'e']);
  });

  it('formats values in a few digits', () => {
    expect(formatMetric(0.123456)).toBe('0.1235');
    expect(formatMetric(3)).toBe('3');
    expect(formatMetric(0.0000123)).toBe('1.23e-5');
    expect(formatMetric(undefined)).toBe('');
  });

  it("links to the run in the proxied MLflow UI, or in a team server's own UI", () => {
    expect(runUrl(JOBS[0], 'http://localhost:8888/user/u/')).toBe(
      'http://localhost:8888/user/u/mlflow/#/experiments/3/runs/run-a'
    );
    const team = job('t', { loss: 1 });
    (team.meta as any).mlflow.tracking_uri = 'https://mlflow.team.example:5000';
    expect(runUrl(team, 'http://localhost:8888/')).toBe(
      'https://mlflow.team.example:5000/#/experiments/3/runs/run-t'
    );
    expect(runUrl(JOBS[2], 'http://localhost:8888/')).toBeNull();
  });
});

describe('Jobs view with MLflow runs', () => {
  let server: FakeServer;
  let model: JobsModel;
  let view: JobsView;
  let names: Array<string | null>;
  beforeEach(async () => {
    server = new FakeServer();
    server.on('GET', 'jobs', { body: JOBS });
    model = new JobsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    names = [];
    view = new JobsView(model, {
      serverSettings: server.settings,
      openPath: () => undefined,
      autoStart: false,
      askModelName: async () => names.shift() ?? null
    });
  });
  afterEach(() => {
    view.dispose();
    model.dispose();
    server.restore();
  });

  const row = (node: HTMLElement, id: string) =>
    node.querySelector(`.jp-ptcuda-JobRow[data-job-id="${id}"]`)!;
  const metric = (node: HTMLElement, id: string, key: string) =>
    row(node, id).querySelector(`[data-metric="${key}"]`)?.textContent;

  it("shows each job's parameters, last metric values and a link to its run", () => {
    const node = dom(view);
    const heads = [...node.querySelectorAll('thead th')].map(
      th => th.textContent
    );
    expect(heads).toEqual(
      expect.arrayContaining(['Parameters', 'acc', 'loss'])
    );
    expect(metric(node, 'a', 'loss')).toBe('0.5');
    expect(metric(node, 'b', 'acc')).toBe('0.9');
    expect(metric(node, 'c', 'loss')).toBe(''); // no run: empty cells
    expect(
      row(node, 'a').querySelector('.jp-ptcuda-JobRow-params')!.textContent
    ).toBe('lr=0.1');
    expect(
      row(node, 'b')
        .querySelector('a.jp-ptcuda-JobRow-run')!
        .getAttribute('href')
    ).toBe('http://localhost:8888/mlflow/#/experiments/3/runs/run-b');
    expect(row(node, 'c').querySelector('.jp-ptcuda-JobRow-run')).toBeNull();
  });

  it('sorts the rows by the chosen metric', () => {
    const order = () =>
      [...dom(view).querySelectorAll('tbody .jp-ptcuda-JobRow')].map(r =>
        r.getAttribute('data-job-id')
      );
    expect(order()).toEqual(['a', 'b', 'c', 'd', 'e']);
    view.sortBy('loss');
    expect(order()).toEqual(['b', 'a', 'd', 'c', 'e']);
    view.sortBy('loss', true);
    expect(order()).toEqual(['d', 'a', 'b', 'c', 'e']);
    const select = dom(view).querySelector(
      'select.jp-ptcuda-JobsView-sort'
    ) as HTMLSelectElement;
    expect([...select.options].map(o => o.value)).toContain('loss');
    expect(
      select.querySelector('option[selected]')?.getAttribute('value')
    ).toBe('loss');
  });

  it('charts a metric across the jobs, or across the ones chosen to compare', () => {
    expect(dom(view).querySelector('.jp-ptcuda-RunChart')).toBeNull();
    view.chart('loss');
    let bars = dom(view).querySelectorAll('.jp-ptcuda-RunChart g[data-job-id]');
    expect([...bars].map(b => b.getAttribute('data-job-id'))).toEqual([
      'a',
      'b',
      'd'
    ]);
    const widths = [...bars].map(b =>
      Number(b.querySelector('rect')!.getAttribute('width'))
    );
    expect(widths[2]).toBeGreaterThan(widths[0]); // 2 > 0.5
    expect(widths[0]).toBeGreaterThan(widths[1]); // 0.5 > 0.125
    view.compare('a', true);
    view.compare('b', true);
    bars = dom(view).querySelectorAll('.jp-ptcuda-RunChart g[data-job-id]');
    expect([...bars].map(b => b.textContent)).toEqual([
      'sweep-a: loss = 0.5sweep-a0.5',
      'sweep-b: loss = 0.125sweep-b0.125'
    ]);
  });

  it('offers Register model only on a finished job whose run has its artifacts', () => {
    const node = dom(view);
    const has = (id: string) =>
      !!row(node, id).querySelector('.jp-ptcuda-JobRow-register');
    expect([has('a'), has('b'), has('c'), has('d'), has('e')]).toEqual([
      true,
      true,
      false,
      false,
      false
    ]);
  });

  it('registers with the name typed and shows the new version', async () => {
    server.on('POST', 'jobs/a/register', {
      status: 201,
      body: {
        name: 'mnist',
        version: '2',
        uri: 'models:/mnist/2',
        run_id: 'run-a',
        image_digest: 'sha256:abc',
        source: 'x'
      }
    });
    names.push('mnist');
    await view.register('a');
    const post = server.requests.find(r => r.method === 'POST')!;
    expect(post.url.pathname).toBe('/jupyter-ptcuda/jobs/a/register');
    expect(post.body).toEqual({ name: 'mnist' });
    expect(
      dom(view).querySelector('.jp-ptcuda-JobsView-message')!.textContent
    ).toContain('models:/mnist/2');
  });

  it("shows the server's message when registering fails, and does nothing when cancelled", async () => {
    server.on('POST', 'jobs/b/register', {
      status: 404,
      body: {
        message:
          "job b's run has no MLflow model (no folder with an MLmodel file among its artifacts: job.log)",
        reason: 'NotFound'
      }
    });
    await view.register('b'); // the dialog was cancelled
    expect(server.requests.filter(r => r.method === 'POST')).toHaveLength(0);
    names.push('mnist');
    await view.register('b');
    const node = dom(view);
    expect(node.querySelector('[role="alert"]')!.textContent).toContain(
      'no MLflow model'
    );
    expect(node.querySelector('.jp-ptcuda-JobsView-message')).toBeNull();
  });
});

describe('Rerun in the Jobs view', () => {
  let server: FakeServer;
  let model: JobsModel;
  let view: JobsView;
  beforeEach(async () => {
    server = new FakeServer();
    server.on('GET', 'jobs', { body: JOBS });
    server.on('GET', 'jobs/r/log', { body: '' });
    model = new JobsModel({
      serverSettings: server.settings,
      autoStart: false
    });
    await model.fetch();
    view = new JobsView(model, {
      serverSettings: server.settings,
      openPath: () => undefined,
      autoStart: false
    });
  });
  afterEach(() => {
    view.dispose();
    model.dispose();
    server.restore();
  });

  const row = (node: HTMLElement, id: string) =>
    node.querySelector(`.jp-ptcuda-JobRow[data-job-id="${id}"]`)!;

  it('offers Rerun on ended jobs only (completed, failed, cancelled), not on a running one', () => {
    const node = dom(view);
    const has = (id: string) =>
      !!row(node, id).querySelector('.jp-ptcuda-JobRow-rerun');
    expect(['a', 'b', 'c', 'd', 'e'].map(has)).toEqual([
      true,
      true,
      true,
      false,
      true
    ]);
  });

  it('posts jobs/<id>/rerun, lists the new job as a rerun of the original and selects it', async () => {
    server.on('POST', 'jobs/e/rerun', {
      status: 201,
      body: {
        id: 'r',
        name: 'sweep-e',
        state: 'running',
        parameters: { lr: 0.01 },
        meta: { rerun_of: 'e' }
      }
    });
    await view.rerun('e');
    const post = server.requests.find(r => r.method === 'POST')!;
    expect(post.url.pathname).toBe('/jupyter-ptcuda/jobs/e/rerun');
    const node = dom(view);
    expect(
      row(node, 'r').querySelector('.jp-ptcuda-JobRow-rerunOf')!.textContent
    ).toBe(' (rerun of e)');
    expect(row(node, 'r').className).toContain('jp-mod-selected');
    expect(node.querySelector('[role="alert"]')).toBeNull();
  });

  it("shows the server's reason when a rerun is refused", async () => {
    server.on('POST', 'jobs/c/rerun', {
      status: 409,
      body: {
        message:
          'train.py has changed since job c ran, so a rerun would not run the same code: submit it as a new job',
        reason: 'Conflict'
      }
    });
    await view.rerun('c');
    expect(dom(view).querySelector('[role="alert"]')!.textContent).toContain(
      'has changed since job c ran'
    );
  });
});
