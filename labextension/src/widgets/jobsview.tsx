import { ServerConnection } from '@jupyterlab/services';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { Dialog, InputDialog, showDialog } from '@jupyterlab/apputils';

import { formatDuration, formatExit } from '../format';
import { errorTitle } from '../health';
import {
  IJobFigure,
  isTerminal,
  JobFiguresModel,
  JobLogModel,
  JobsModel
} from '../jobs';
import { errorMessage } from '../request';
import {
  canRegister,
  formatMetric,
  formatParameters,
  jobRun,
  metricColumns,
  metricKeys,
  metricValue,
  registerModel,
  runUrl,
  sortByMetric
} from '../runs';
import { IJob } from '../tokens';
import { Linkified } from './linkified';
import { RunChart } from './runchart';
import { JobPlace, JobWaiting } from './waiting';

/** The selected job's live log. */
function JobLog(props: {
  log: JobLogModel;
  job: IJob | null;
  onOpen: (path: string) => void;
}): JSX.Element {
  const { log, job } = props;
  const ref = React.useRef<HTMLPreElement>(null);
  const [follow, setFollow] = React.useState(true);
  React.useEffect(() => {
    if (follow && ref.current) {
      ref.current.scrollTop = ref.current.scrollHeight;
    }
  });
  const state = log.state ?? job?.state ?? 'queued';
  return (
    <section
      className="jp-ptcuda-JobLog"
      aria-label={`Log of job ${log.jobId}`}
      data-job-id={log.jobId}
    >
      <header>
        <strong>{job?.name || log.jobId}</strong>
        <span className={`jp-ptcuda-Badge jp-ptcuda-Badge-${state}`}>
          {state}
        </span>
        {job && job.exit_code !== null && job.exit_code !== undefined && (
          <span className="jp-ptcuda-JobLog-exit">
            exit code {formatExit(job)}
          </span>
        )}
        {job && job.reason && job.reason !== job.state && (
          <span className="jp-ptcuda-JobLog-reason">{job.reason}</span>
        )}
        <span className="jp-ptcuda-muted">
          {log.done ? 'log complete' : 'following the log…'} ({log.offset}{' '}
          bytes)
        </span>
        {job?.output_path && (
          <a
            href="#"
            onClick={e => {
              e.preventDefault();
              props.onOpen(job.output_path!);
            }}
          >
            outputs
          </a>
        )}
      </header>
      {log.error && <div className="jp-ptcuda-error">{log.error}</div>}
      <pre
        ref={ref}
        className="jp-ptcuda-JobLog-text"
        onScroll={e => {
          const el = e.currentTarget;
          setFollow(el.scrollTop + el.clientHeight >= el.scrollHeight - 8);
        }}
      >
        {log.text ||
          (log.done
            ? '(empty log)'
            : state === 'queued'
              ? 'Nothing has run yet: the job waits for its GPUs (above: why, and its place in the queue). It starts by itself when they free up.'
              : '')}
      </pre>
    </section>
  );
}

/** The figures the selected job saved (matplotlib, at `plt.show()` and at each cell's end). */
export function JobFigures(props: {
  figures: IJobFigure[];
  src: (name: string) => string | null;
  error?: string;
  onOpen: (path: string) => void;
}): JSX.Element | null {
  const { figures } = props;
  if (!figures.length && !props.error) {
    return null;
  }
  return (
    <section className="jp-ptcuda-JobFigures" aria-label="Figures">
      <h3>Figures ({figures.length})</h3>
      {props.error && <div className="jp-ptcuda-error">{props.error}</div>}
      <div style={{ display: 'flex', flexWrap: 'wrap', gap: '8px' }}>
        {figures.map(figure => {
          const src = props.src(figure.name);
          const label = `cell ${figure.cell}, figure ${figure.index}`;
          return (
            <figure
              key={figure.name}
              className="jp-ptcuda-JobFigure"
              data-name={figure.name}
              style={{ margin: 0, maxWidth: '360px' }}
            >
              {src ? (
                <img src={src} alt={label} style={{ maxWidth: '100%' }} />
              ) : (
                <div className="jp-ptcuda-muted">loading {figure.name}…</div>
              )}
              <figcaption>
                {label}{' '}
                {figure.path && (
                  <a
                    href="#"
                    onClick={e => {
                      e.preventDefault();
                      props.onOpen(figure.path!);
                    }}
                  >
                    open
                  </a>
                )}
              </figcaption>
            </figure>
          );
        })}
      </div>
    </section>
  );
}

/** A job's creation time: the time today, else the date and time. */
function formatCreated(iso: string | null | undefined): string {
  if (!iso) {
    return '';
  }
  const when = new Date(iso);
  const sameDay = when.toDateString() === new Date().toDateString();
  return sameDay
    ? when.toLocaleTimeString([], {
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit'
      })
    : when.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
}

function JobRow(props: {
  job: IJob;
  selected: boolean;
  metrics: string[];
  runHref: string | null;
  compared: boolean;
  onCompare: (on: boolean) => void;
  onSelect: () => void;
  onCancel: () => void;
  onRerun: () => void;
  onRegister: () => void;
  onTerminal?: () => void;
}): JSX.Element {
  const { job } = props;
  const active = !isTerminal(job.state);
  const run = jobRun(job);
  const params = formatParameters(job);
  const rerunOf = (job.meta as { rerun_of?: string } | undefined)?.rerun_of;
  return (
    <tr
      className={`jp-ptcuda-JobRow${props.selected ? ' jp-mod-selected' : ''}`}
      data-job-id={job.id}
      data-state={job.state}
      onClick={props.onSelect}
    >
      <td>
        {run && (
          <input
            type="checkbox"
            className="jp-ptcuda-JobRow-compare"
            title="Compare this job in the chart"
            aria-label={`Compare job ${job.id}`}
            checked={props.compared}
            onClick={e => e.stopPropagation()}
            onChange={e => props.onCompare(e.currentTarget.checked)}
          />
        )}
        {job.name || job.notebook_path || job.id}
        {rerunOf && (
          <span
            className="jp-ptcuda-JobRow-rerunOf"
            title={`A rerun of job ${rerunOf}: its script snapshot, parameters, GPUs, mounts and image digest`}
          >
            {' '}
            (rerun of {rerunOf})
          </span>
        )}
      </td>
      <td>
        <code>{job.id}</code>
      </td>
      <td title={job.reason ?? ''}>
        <span className={`jp-ptcuda-Badge jp-ptcuda-Badge-${job.state}`}>
          {job.state}
          {job.cancel_requested && active ? ' (cancelling)' : ''}
        </span>
        <JobPlace job={job} />
      </td>
      <td className="jp-ptcuda-JobRow-exit" data-label="exit">
        {formatExit(job)}
      </td>
      <td data-label="GPUs">{job.gpus ?? ''}</td>
      <td title={job.created ?? ''}>{formatCreated(job.created)}</td>
      <td>{formatDuration(job.duration_s)}</td>
      <td
        className="jp-ptcuda-JobRow-params"
        data-label="params"
        title={params.join('\n')}
      >
        {params.join(', ')}
      </td>
      {props.metrics.map(key => (
        <td
          key={key}
          className="jp-ptcuda-JobRow-metric"
          data-metric={key}
          data-label={key}
        >
          {formatMetric(metricValue(job, key))}
        </td>
      ))}
      <td className="jp-ptcuda-JobRow-actionsCell">
        <div className="jp-ptcuda-JobRow-actions">
          <button
            className="jp-Button jp-mod-styled jp-ptcuda-JobRow-log"
            onClick={e => {
              e.stopPropagation();
              props.onSelect();
            }}
          >
            Log
          </button>
          {job.state === 'running' && props.onTerminal && (
            <button
              className="jp-Button jp-mod-styled jp-ptcuda-JobRow-terminal"
              title="Open a terminal in this job's container (as its user, in its folder)"
              onClick={e => {
                e.stopPropagation();
                props.onTerminal?.();
              }}
            >
              Terminal
            </button>
          )}
          {props.runHref && run && (
            <a
              className="jp-Button jp-mod-styled jp-ptcuda-JobRow-run"
              href={props.runHref}
              target="_blank"
              rel="noopener noreferrer"
              title={`MLflow run ${run.run_id} (${run.status ?? ''})`}
              onClick={e => e.stopPropagation()}
            >
              MLflow run
            </a>
          )}
          {canRegister(job) && (
            <button
              className="jp-Button jp-mod-styled jp-ptcuda-JobRow-register"
              title="Make a model version in the MLflow registry from the model this job logged"
              onClick={e => {
                e.stopPropagation();
                props.onRegister();
              }}
            >
              Register model
            </button>
          )}
          {!active && (
            <button
              className="jp-Button jp-mod-styled jp-ptcuda-JobRow-rerun"
              title="Run this job again as a new job: the same script snapshot, parameters, GPUs, mounts and image digest"
              onClick={e => {
                e.stopPropagation();
                props.onRerun();
              }}
            >
              Rerun
            </button>
          )}
          {active && (
            <button
              className="jp-Button jp-mod-styled jp-mod-warn jp-ptcuda-JobRow-cancel"
              onClick={e => {
                e.stopPropagation();
                props.onCancel();
              }}
            >
              Cancel
            </button>
          )}
        </div>
      </td>
    </tr>
  );
}

/**
 * The "Jobs" view: every job with its state and exit code, a Log and a Cancel button, and the
 * selected job's log, followed live, with the figures it saved.
 */
export class JobsView extends ReactWidget {
  constructor(
    private _model: JobsModel,
    private _options: {
      serverSettings?: ServerConnection.ISettings;
      openPath: (path: string) => void;
      /** Open a file (a figure's "open" link) in JupyterLab; default: show it in the file browser. */
      openFile?: (path: string) => void;
      /** Open a terminal in a running job's container (the "Terminal" button; none without it). */
      openTerminal?: (jobId: string) => void;
      /** Start polling the selected job's figures at once (default true; tests set false). */
      autoStart?: boolean;
      /** Ask before cancelling a job (default true; unit tests set false). */
      confirm?: boolean;
      /** Ask the name of the model to register (default: a dialog); null: the user cancelled. */
      askModelName?: (job: IJob) => Promise<string | null>;
    }
  ) {
    super();
    this.addClass('jp-ptcuda-JobsView');
    _model.changed.connect(this._onChange, this);
  }

  /** Show a job's log and figures (and follow them while it runs). */
  select(jobId: string): void {
    if (this._log?.jobId !== jobId) {
      this._log?.dispose();
      this._figures?.dispose();
      this._log = new JobLogModel(jobId, {
        serverSettings: this._options.serverSettings
      });
      this._log.changed.connect(this._onLogChange, this);
      this._figures = new JobFiguresModel(jobId, {
        serverSettings: this._options.serverSettings,
        autoStart: this._options.autoStart
      });
      this._figures.changed.connect(this._onChange, this);
    }
    this.update();
  }

  /** A banner above the list (e.g. why a submission failed); null clears it. */
  setNotice(notice: { title: string; message: string } | null): void {
    this._notice = notice;
    this.update();
  }

  /** Order the list by the last value of a metric (null: newest first). */
  sortBy(metric: string | null, descending = false): void {
    this._sortKey = metric;
    this._descending = descending;
    this.update();
  }

  /** The metric the chart shows (null: no chart). */
  chart(metric: string | null): void {
    this._chartKey = metric;
    this.update();
  }

  /** Add a job to (or take it out of) the chart; with none chosen, the chart shows every job. */
  compare(jobId: string, on: boolean): void {
    if (on) {
      this._compared.add(jobId);
    } else {
      this._compared.delete(jobId);
    }
    this.update();
  }

  /** The last register outcome, shown above the list. */
  get message(): string {
    return this._message;
  }

  /** Register the job's model under a name the user types; shows the new version or the server's message. */
  async register(jobId: string): Promise<void> {
    const job = this._model.job(jobId);
    if (!job) {
      return;
    }
    const name = await (this._options.askModelName ?? askModelName)(job);
    if (!name) {
      return;
    }
    try {
      const version = await registerModel(
        jobId,
        name,
        this._options.serverSettings
      );
      this._message = `Registered ${version.uri} (version ${version.version} of ${version.name}) from job ${jobId}.`;
      this.setNotice(null);
    } catch (error) {
      this._message = '';
      this.setNotice({
        title: `Cannot register a model from job ${jobId}`,
        message: errorMessage(error)
      });
    }
  }

  get log(): JobLogModel | null {
    return this._log;
  }

  get figures(): JobFiguresModel | null {
    return this._figures;
  }

  protected render(): JSX.Element {
    const model = this._model;
    const selected = this._log?.jobId ?? null;
    const error = model.error;
    const keys = metricKeys(model.jobs);
    const columns = metricColumns(model.jobs);
    const sortKey =
      this._sortKey && keys.includes(this._sortKey) ? this._sortKey : null;
    const chartKey =
      this._chartKey && keys.includes(this._chartKey) ? this._chartKey : null;
    const jobs = sortByMetric(model.jobs, sortKey, this._descending);
    const baseUrl = (
      this._options.serverSettings ?? ServerConnection.makeSettings()
    ).baseUrl;
    const charted = jobs.filter(
      j =>
        chartKey !== null &&
        metricValue(j, chartKey) !== undefined &&
        (this._compared.size === 0 || this._compared.has(j.id))
    );
    return (
      <div className="jp-ptcuda-JobsView-body">
        <header className="jp-ptcuda-JobsView-header">
          <h2>Training jobs</h2>
          <button
            className="jp-Button jp-mod-styled"
            onClick={() => void model.refresh().catch(() => undefined)}
          >
            Refresh
          </button>
        </header>
        {this._notice && (
          <div className="jp-ptcuda-error" role="alert">
            <strong>{this._notice.title}</strong>
            <div>
              <Linkified text={this._notice.message} />
            </div>
          </div>
        )}
        {error && (
          <div className="jp-ptcuda-error" role="alert">
            <strong>
              {error.missing
                ? 'Server extension not available'
                : errorTitle(error.reason)}
            </strong>
            <div>{error.message}</div>
          </div>
        )}
        {this._message && (
          <div className="jp-ptcuda-JobsView-message" role="status">
            {this._message}
          </div>
        )}
        {keys.length > 0 && (
          <div className="jp-ptcuda-JobsView-runs">
            <label>
              Sort by{' '}
              <select
                className="jp-ptcuda-JobsView-sort"
                value={sortKey ?? ''}
                onChange={e =>
                  this.sortBy(e.currentTarget.value || null, this._descending)
                }
              >
                <option value="">newest first</option>
                {keys.map(k => (
                  <option key={k} value={k}>
                    {k}
                  </option>
                ))}
              </select>
            </label>
            {sortKey && (
              <button
                className="jp-Button jp-mod-styled jp-ptcuda-JobsView-order"
                onClick={() => this.sortBy(sortKey, !this._descending)}
              >
                {this._descending ? 'highest first' : 'lowest first'}
              </button>
            )}
            <label>
              Chart{' '}
              <select
                className="jp-ptcuda-JobsView-chart"
                value={chartKey ?? ''}
                onChange={e => this.chart(e.currentTarget.value || null)}
              >
                <option value="">none</option>
                {keys.map(k => (
                  <option key={k} value={k}>
                    {k}
                  </option>
                ))}
              </select>
            </label>
          </div>
        )}
        {chartKey && (
          <RunChart
            metric={chartKey}
            bars={charted.map(j => ({
              id: j.id,
              label: j.name || j.id,
              value: metricValue(j, chartKey)!
            }))}
          />
        )}
        {model.jobs.length === 0 && !error ? (
          <p className="jp-ptcuda-muted">
            No jobs yet. Open a notebook and use “Run as training job” (notebook
            toolbar or command palette).
          </p>
        ) : (
          <table className="jp-ptcuda-JobsTable">
            <thead>
              <tr>
                <th>Name</th>
                <th>ID</th>
                <th>State</th>
                <th>Exit</th>
                <th>GPUs</th>
                <th>Created</th>
                <th>Duration</th>
                <th>Parameters</th>
                {columns.map(k => (
                  <th key={k} className="jp-ptcuda-JobsTable-metric">
                    <button
                      className="jp-ptcuda-JobsTable-sortButton"
                      title={`Sort by the last value of ${k}`}
                      onClick={() =>
                        this.sortBy(
                          k,
                          sortKey === k ? !this._descending : false
                        )
                      }
                    >
                      {k}
                      {sortKey === k ? (this._descending ? ' ▼' : ' ▲') : ''}
                    </button>
                  </th>
                ))}
                <th />
              </tr>
            </thead>
            <tbody>
              {jobs.map(job => (
                <React.Fragment key={job.id}>
                  <JobRow
                    job={job}
                    selected={job.id === selected}
                    metrics={columns}
                    runHref={runUrl(job, baseUrl)}
                    compared={this._compared.has(job.id)}
                    onCompare={on => this.compare(job.id, on)}
                    onSelect={() => this.select(job.id)}
                    onCancel={() => void this._cancel(job.id)}
                    onRerun={() => void this.rerun(job.id)}
                    onRegister={() => void this.register(job.id)}
                    onTerminal={
                      this._options.openTerminal
                        ? () => this._options.openTerminal?.(job.id)
                        : undefined
                    }
                  />
                  <JobWaiting
                    job={job}
                    at={model.readAt(job)}
                    columns={9 + columns.length}
                    onSelect={() => this.select(job.id)}
                  />
                </React.Fragment>
              ))}
            </tbody>
          </table>
        )}
        {this._log && (
          <JobLog
            log={this._log}
            job={model.job(this._log.jobId)}
            onOpen={this._options.openPath}
          />
        )}
        {this._figures && (
          <JobFigures
            figures={this._figures.figures}
            src={name => this._figures?.src(name) ?? null}
            error={this._figures.error}
            onOpen={this._options.openFile ?? this._options.openPath}
          />
        )}
      </div>
    );
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._model.visible = true;
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._model.visible = false;
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._model.visible = this.isVisible;
  }

  protected onBeforeDetach(msg: Message): void {
    this._model.visible = false;
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.changed.disconnect(this._onChange, this);
    this._log?.dispose();
    this._figures?.dispose();
    super.dispose();
  }

  /** Rerun an ended job; the new job is selected (its log shown). A refusal is shown as a notice. */
  async rerun(jobId: string): Promise<void> {
    try {
      const job = await this._model.rerun(jobId);
      this.setNotice(null);
      this.select(job.id);
    } catch (error) {
      this.setNotice({
        title: `Cannot rerun job ${jobId}`,
        message: errorMessage(error)
      });
    }
  }

  private async _cancel(jobId: string): Promise<void> {
    const job = this._model.job(jobId);
    const queued = job?.state === 'queued';
    if (this._options.confirm !== false) {
      const answer = await showDialog({
        title: `Cancel job ${job?.name || jobId}?`,
        body: queued
          ? 'It is still waiting for GPUs: it leaves the GPU queue and never starts.'
          : 'Its process gets SIGTERM, then SIGKILL if it has not ended after the grace period. ' +
            'The log and whatever it saved so far are kept.',
        buttons: [
          Dialog.cancelButton({
            label: queued ? 'Keep waiting' : 'Keep running'
          }),
          Dialog.warnButton({ label: 'Cancel job' })
        ]
      });
      if (!answer.button.accept) {
        return;
      }
    }
    try {
      await this._model.cancel(jobId);
      if (queued) {
        this._message = `Job ${job?.name || jobId} cancelled while it waited: it left the GPU queue before it started.`;
      }
      this.setNotice(null);
    } catch (error) {
      this.setNotice({
        title: `Cannot cancel job ${jobId}`,
        message: errorMessage(error)
      });
    }
  }

  private _onChange(): void {
    this.update();
  }

  private _onLogChange(): void {
    // The job list may lag behind the log: fetch the job when its log says it ended.
    const log = this._log;
    if (log && log.done && !this._refreshedFor.has(log.jobId)) {
      this._refreshedFor.add(log.jobId);
      void this._model.get(log.jobId).catch(() => undefined);
    }
    this.update();
  }

  private _log: JobLogModel | null = null;
  private _figures: JobFiguresModel | null = null;
  private _notice: { title: string; message: string } | null = null;
  private _refreshedFor = new Set<string>();
  private _sortKey: string | null = null;
  private _descending = false;
  private _chartKey: string | null = null;
  private _compared = new Set<string>();
  private _message = '';
}

/** The registered model's name, from a dialog (suggested: the job's name). */
async function askModelName(job: IJob): Promise<string | null> {
  const suggested = (job.name || job.id).replace(/[^A-Za-z0-9._-]+/g, '-');
  const answer = await InputDialog.getText({
    title: `Register the model of job ${job.name || job.id}`,
    label:
      'Registered model name (letters, digits, ".", "_", "-"; a new version if it exists):',
    text: suggested,
    okLabel: 'Register'
  });
  return answer.button.accept ? (answer.value ?? '').trim() || null : null;
}
