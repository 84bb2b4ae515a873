import { ServerConnection } from '@jupyterlab/services';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { Dialog, showDialog } from '@jupyterlab/apputils';

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
import { IJob } from '../tokens';
import { Linkified } from './linkified';

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
        {log.text || (log.done ? '(empty log)' : '')}
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
  onSelect: () => void;
  onCancel: () => void;
  onTerminal?: () => void;
}): JSX.Element {
  const { job } = props;
  const active = !isTerminal(job.state);
  return (
    <tr
      className={`jp-ptcuda-JobRow${props.selected ? ' jp-mod-selected' : ''}`}
      data-job-id={job.id}
      data-state={job.state}
      onClick={props.onSelect}
    >
      <td>{job.name || job.notebook_path || job.id}</td>
      <td>
        <code>{job.id}</code>
      </td>
      <td title={job.reason ?? ''}>
        <span className={`jp-ptcuda-Badge jp-ptcuda-Badge-${job.state}`}>
          {job.state}
          {job.cancel_requested && active ? ' (cancelling)' : ''}
        </span>
      </td>
      <td className="jp-ptcuda-JobRow-exit" data-label="exit">
        {formatExit(job)}
      </td>
      <td data-label="GPUs">{job.gpus ?? ''}</td>
      <td title={job.created ?? ''}>{formatCreated(job.created)}</td>
      <td>{formatDuration(job.duration_s)}</td>
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
                <th />
              </tr>
            </thead>
            <tbody>
              {model.jobs.map(job => (
                <JobRow
                  key={job.id}
                  job={job}
                  selected={job.id === selected}
                  onSelect={() => this.select(job.id)}
                  onCancel={() => void this._cancel(job.id)}
                  onTerminal={
                    this._options.openTerminal
                      ? () => this._options.openTerminal?.(job.id)
                      : undefined
                  }
                />
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

  private async _cancel(jobId: string): Promise<void> {
    const job = this._model.job(jobId);
    if (this._options.confirm !== false) {
      const answer = await showDialog({
        title: `Cancel job ${job?.name || jobId}?`,
        body:
          'Its process gets SIGTERM, then SIGKILL if it has not ended after the grace period. ' +
          'The log and whatever it saved so far are kept.',
        buttons: [
          Dialog.cancelButton({ label: 'Keep running' }),
          Dialog.warnButton({ label: 'Cancel job' })
        ]
      });
      if (!answer.button.accept) {
        return;
      }
    }
    try {
      await this._model.cancel(jobId);
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
}
