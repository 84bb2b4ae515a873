/**
 * Jobs as MLflow runs (issue 24) for the Jobs view: a job's run as `GET jobs` shows it
 * (`meta.mlflow`: run id, experiment id, status, the last value of each logged metric), the
 * metrics worth a column, sorting by a metric, the link to the run in the MLflow UI, and
 * `POST jobs/<id>/register` (a model version from a finished job's run).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { postJSON } from './request';
import { IJob } from './tokens';

/** `meta.mlflow` of a job (jupyter_ptcuda/jobs/tracking.py `_sync`). */
export interface IJobRun {
  run_id: string;
  experiment_id?: string | null;
  /** RUNNING until the run has its artifacts, then FINISHED / FAILED / KILLED. */
  status?: string | null;
  /** The last value of each metric (at most 50 keys). */
  metrics: { [key: string]: number };
  /** The store (null when it names a credential). */
  tracking_uri?: string | null;
}

/** `POST jobs/<id>/register` → 201. */
export interface IModelVersion {
  name: string;
  version: string;
  uri: string;
  run_id: string;
  image_digest: string;
  source: string;
}

/** The job's MLflow run, or null (no MLflow, or not made yet). */
export function jobRun(job: IJob): IJobRun | null {
  const meta = job.meta as { mlflow?: Partial<IJobRun> } | undefined;
  const run = meta?.mlflow;
  if (!run || typeof run.run_id !== 'string' || !run.run_id) {
    return null;
  }
  const metrics: { [key: string]: number } = {};
  for (const [key, value] of Object.entries(run.metrics ?? {})) {
    if (typeof value === 'number') {
      metrics[key] = value;
    }
  }
  return { ...run, run_id: run.run_id, metrics };
}

/** Metrics the server samples itself (GPU telemetry) rather than the script's own. */
export function isSystemMetric(key: string): boolean {
  return key.startsWith('system/');
}

/**
 * Every metric key of these jobs' runs: the script's own first (alphabetical), then `job.duration_s`,
 * then the GPU telemetry (`system/...`).
 */
export function metricKeys(jobs: IJob[]): string[] {
  const keys = new Set<string>();
  for (const job of jobs) {
    for (const key of Object.keys(jobRun(job)?.metrics ?? {})) {
      keys.add(key);
    }
  }
  const rank = (k: string) =>
    isSystemMetric(k) ? 2 : k === 'job.duration_s' ? 1 : 0;
  return [...keys].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** The metric columns of the table: the script's own metrics (at most `max`). */
export function metricColumns(jobs: IJob[], max = 6): string[] {
  return metricKeys(jobs)
    .filter(k => !isSystemMetric(k) && k !== 'job.duration_s')
    .slice(0, max);
}

/** The last value of `key` in the job's run, or undefined. */
export function metricValue(job: IJob, key: string): number | undefined {
  const value = jobRun(job)?.metrics[key];
  return typeof value === 'number' && Number.isFinite(value)
    ? value
    : undefined;
}

/**
 * The jobs ordered by the last value of `key` (ascending or descending); jobs without the metric
 * keep their order, after the others. `key` null: the server's order (newest first).
 */
export function sortByMetric(
  jobs: IJob[],
  key: string | null,
  descending = false
): IJob[] {
  if (!key) {
    return jobs;
  }
  const withValue = jobs.filter(j => metricValue(j, key) !== undefined);
  const without = jobs.filter(j => metricValue(j, key) === undefined);
  withValue.sort((a, b) => {
    const d = metricValue(a, key)! - metricValue(b, key)!;
    return descending ? -d : d;
  });
  return [...withValue, ...without];
}

/** A metric value in a few significant digits (0.1234, 1.23e-5, 12345). */
export function formatMetric(value: number | undefined): string {
  if (value === undefined) {
    return '';
  }
  if (Number.isInteger(value) && Math.abs(value) < 1e9) {
    return String(value);
  }
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) {
    return value.toExponential(2);
  }
  return String(Number(value.toPrecision(4)));
}

/** The job's `-p` values as `name=value` strings. */
export function formatParameters(job: IJob): string[] {
  return Object.entries(job.parameters ?? {}).map(
    ([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`
  );
}

/**
 * The run in the MLflow UI: the team server's own UI for an http(s) store, else the UI proxied by the
 * Jupyter server at `{base_url}mlflow/` (jupyter-server-proxy, docs/mlflow.md). Null without a run.
 */
export function runUrl(job: IJob, baseUrl: string): string | null {
  const run = jobRun(job);
  if (!run) {
    return null;
  }
  const fragment = `#/experiments/${encodeURIComponent(
    run.experiment_id ?? '0'
  )}/runs/${encodeURIComponent(run.run_id)}`;
  const uri = run.tracking_uri ?? '';
  const root = /^https?:\/\//.test(uri)
    ? uri.replace(/\/*$/, '/')
    : URLExt.join(baseUrl, 'mlflow/');
  return `${root}${fragment}`;
}

/**
 * Whether the job can have a model registered: it has ended and its run has its artifacts (the run's
 * status is RUNNING until the server has copied them, after the job's container is gone).
 */
export function canRegister(job: IJob): boolean {
  const run = jobRun(job);
  return (
    ['completed', 'failed', 'cancelled', 'timed_out'].includes(job.state) &&
    run !== null &&
    run.status !== 'RUNNING'
  );
}

/** `POST jobs/<id>/register {"name"}`: a model version; rejects with the server's message. */
export function registerModel(
  jobId: string,
  name: string,
  settings?: ServerConnection.ISettings,
  artifact?: string
): Promise<IModelVersion> {
  const body: { name: string; artifact?: string } = { name };
  if (artifact) {
    body.artifact = artifact;
  }
  return postJSON<IModelVersion>(
    `jobs/${encodeURIComponent(jobId)}/register`,
    body,
    settings
  );
}
