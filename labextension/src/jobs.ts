/**
 * Batch jobs: the list (`GET jobs`, polled while the Jobs view is visible), submitting
 * (`POST jobs`), cancelling (`DELETE jobs/<id>`), one job's live log
 * (`GET jobs/<id>/log?offset=N`, polled until the job has ended and the log is read to its end),
 * and one job's matplotlib figures (`GET jobs/<id>/figures`, polled until the job has ended).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  API_NAMESPACE,
  ApiError,
  errorMessage,
  postJSON,
  requestAPI,
  requestRaw
} from './request';
import { IJob, IJobRequest, JobState } from './tokens';

export const TERMINAL_STATES: ReadonlyArray<JobState> = [
  'completed',
  'failed',
  'cancelled',
  'timed_out'
];

export function isTerminal(state: string | null | undefined): boolean {
  return !!state && (TERMINAL_STATES as string[]).includes(state);
}

export class JobsModel implements IDisposable {
  constructor(options: JobsModel.IOptions = {}) {
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._interval = options.refreshInterval ?? 3000;
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this.fetch(),
      frequency: { interval: this._interval, backoff: true, max: 60000 },
      name: 'jupyter-ptcuda:JobsModel#jobs',
      standby: () => (this._visible ? 'when-hidden' : true)
    });
  }

  get jobs(): IJob[] {
    return this._jobs;
  }

  /** The last failure to list jobs, or null. */
  get error(): ApiError | null {
    return this._error;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get poll(): Poll {
    return this._poll;
  }

  /** Set by the Jobs view when it is shown or hidden. */
  set visible(value: boolean) {
    if (value === this._visible) {
      return;
    }
    this._visible = value;
    if (value) {
      void this._poll.refresh();
    }
  }

  set refreshInterval(ms: number) {
    this._interval = Math.max(500, ms);
    this._poll.frequency = {
      interval: this._interval,
      backoff: true,
      max: 60000
    };
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** `GET jobs`; rejects after an error (the poll backs off). */
  async fetch(): Promise<void> {
    try {
      const jobs = (await requestAPI<IJob[]>('jobs', {}, this._settings)) ?? [];
      const now = Date.now();
      jobs.forEach(job => this._readAt.set(job, now));
      this._jobs = jobs;
      this._error = null;
      this._changed.emit();
    } catch (error) {
      this._error =
        error instanceof ApiError
          ? error
          : new ApiError(errorMessage(error), 0);
      this._changed.emit();
      throw error;
    }
  }

  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  job(id: string): IJob | null {
    return this._jobs.find(j => j.id === id) ?? null;
  }

  /**
   * When this copy of the job was read from the server (`Date.now()`): a queued job's `waited_s`
   * plus the time since is how long it has waited, shown ticking without asking again.
   */
  readAt(job: IJob): number {
    return this._readAt.get(job) ?? Date.now();
  }

  /** Submit a job; resolves with the new job (201). Rejects with the API's error. */
  async submit(request: IJobRequest): Promise<IJob> {
    const job = await postJSON<IJob>('jobs', request, this._settings);
    this._replace(job);
    return job;
  }

  /** One job, fresh from the server. */
  async get(id: string): Promise<IJob> {
    const job = await requestAPI<IJob>(
      `jobs/${encodeURIComponent(id)}`,
      {},
      this._settings
    );
    this._replace(job);
    return job;
  }

  /**
   * Run an ended job again (`POST jobs/<id>/rerun`): a new job with the same script snapshot,
   * parameters, GPUs, mounts and image digest. Resolves with the new job (201); rejects with the
   * API's error (409 while it runs or when its script changed since).
   */
  async rerun(id: string): Promise<IJob> {
    const job = await postJSON<IJob>(
      `jobs/${encodeURIComponent(id)}/rerun`,
      {},
      this._settings
    );
    this._replace(job);
    return job;
  }

  /**
   * Ask the server to cancel (202: SIGTERM, grace period, SIGKILL). Resolves with the job as the
   * server returned it; its state becomes `cancelled` a little later.
   */
  async cancel(id: string): Promise<IJob | null> {
    const job = await requestAPI<IJob | null>(
      `jobs/${encodeURIComponent(id)}`,
      { method: 'DELETE' },
      this._settings
    );
    if (job) {
      this._replace(job);
    }
    void this._poll.refresh();
    return job;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _replace(job: IJob): void {
    this._readAt.set(job, Date.now());
    const i = this._jobs.findIndex(j => j.id === job.id);
    if (i >= 0) {
      this._jobs = [...this._jobs.slice(0, i), job, ...this._jobs.slice(i + 1)];
    } else {
      this._jobs = [job, ...this._jobs];
    }
    this._changed.emit();
  }

  private _settings: ServerConnection.ISettings;
  private _interval: number;
  private _visible = false;
  private _jobs: IJob[] = [];
  private _readAt = new WeakMap<IJob, number>();
  private _error: ApiError | null = null;
  private _changed = new Signal<this, void>(this);
  private _poll: Poll;
}

export namespace JobsModel {
  export interface IOptions {
    serverSettings?: ServerConnection.ISettings;
    /** ms between `GET jobs` while the view is visible (default 3000). */
    refreshInterval?: number;
    autoStart?: boolean;
  }
}

/**
 * One job's log, read incrementally with `offset` (bytes). The server says the job's state and
 * the next offset in `X-Ptcuda-Job-State` / `X-Ptcuda-Log-Offset`. Bytes are decoded as a UTF-8
 * stream, so a character split between two reads is not mangled. Polling stops once the job is
 * over and a read returns nothing more.
 */
/**
 * What the job log and figure models share: one job, a {@link Poll} of `fetch()` that stops once the
 * job is over and all is read (`done`), the last error, a `changed` signal.
 */
abstract class JobReader implements IDisposable {
  constructor(
    readonly jobId: string,
    name: string,
    options: {
      serverSettings?: ServerConnection.ISettings;
      pollInterval?: number;
      autoStart?: boolean;
    },
    interval: number
  ) {
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this.fetch(),
      frequency: {
        interval: options.pollInterval ?? interval,
        backoff: true,
        max: 30000
      },
      name: `jupyter-ptcuda:${name}#${jobId}`,
      standby: 'when-hidden'
    });
  }

  /** Read what is new (the poll's factory). */
  abstract fetch(): Promise<unknown>;

  /** True once the job has ended and all of it has been read. */
  get done(): boolean {
    return this._done;
  }

  get error(): string {
    return this._error;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get poll(): Poll {
    return this._poll;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  protected _finish(): void {
    this._done = true;
    void this._poll.stop();
  }

  protected _settings: ServerConnection.ISettings;
  protected _done = false;
  protected _error = '';
  protected _changed = new Signal<this, void>(this);
  private _poll: Poll;
}

export class JobLogModel extends JobReader {
  constructor(jobId: string, options: JobLogModel.IOptions = {}) {
    super(jobId, 'JobLogModel', options, 1000);
    this._maxChars = options.maxChars ?? 2_000_000;
  }

  /** The log text read so far (its tail when longer than `maxChars`). */
  get text(): string {
    return this._text;
  }

  /** Bytes read so far (the next `offset`). */
  get offset(): number {
    return this._offset;
  }

  /** The job's state as of the last read. */
  get state(): JobState | null {
    return this._state;
  }

  /** Read what is new. Returns the number of bytes read. */
  async fetch(): Promise<number> {
    if (this._done) {
      return 0;
    }
    let response: Response;
    try {
      response = await requestRaw(
        `jobs/${encodeURIComponent(this.jobId)}/log?offset=${this._offset}`,
        {},
        this._settings
      );
    } catch (error) {
      this._error = errorMessage(error);
      if (error instanceof ApiError && error.status === 404) {
        this._finish(); // the job is gone: nothing more to read
      }
      this._changed.emit();
      throw error;
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    const state = response.headers.get('X-Ptcuda-Job-State') as JobState | null;
    const next = Number(response.headers.get('X-Ptcuda-Log-Offset'));
    this._offset =
      Number.isFinite(next) && next > 0 ? next : this._offset + bytes.length;
    this._state = state ?? this._state;
    this._error = '';
    if (bytes.length) {
      this._append(this._decoder.decode(bytes, { stream: true }));
    }
    if (isTerminal(this._state) && bytes.length === 0) {
      this._append(this._decoder.decode());
      this._finish();
    }
    this._changed.emit();
    return bytes.length;
  }

  private _append(chunk: string): void {
    if (!chunk) {
      return;
    }
    this._text += chunk;
    if (this._text.length > this._maxChars) {
      this._text = this._text.slice(this._text.length - this._maxChars);
    }
  }

  private _maxChars: number;
  private _decoder = new TextDecoder('utf-8');
  private _text = '';
  private _offset = 0;
  private _state: JobState | null = null;
}

export namespace JobLogModel {
  export interface IOptions {
    serverSettings?: ServerConnection.ISettings;
    /** ms between reads (default 1000, backing off after errors). */
    pollInterval?: number;
    /** Characters of log kept (default 2 000 000; older text is dropped). */
    maxChars?: number;
    autoStart?: boolean;
  }
}

/** A figure a notebook job saved: `outputs/<job>/artifacts/figures/cell-<cell>-<index>.png`. */
export interface IJobFigure {
  name: string;
  /** The notebook cell that drew it (counted from 1, markdown cells included). */
  cell: number;
  /** Its number within the cell, from 1. */
  index: number;
  size: number;
  /** Relative to the server root (to open it in JupyterLab). */
  path?: string | null;
}

/**
 * One job's figures: the list (`GET jobs/<id>/figures`), polled while the job runs and read once
 * more after it has ended, and each figure's PNG (`GET jobs/<id>/figures/<name>`), fetched with the
 * page's credentials and shown through a blob URL (revoked on dispose).
 */
export class JobFiguresModel extends JobReader {
  constructor(jobId: string, options: JobFiguresModel.IOptions = {}) {
    super(jobId, 'JobFiguresModel', options, 3000);
  }

  /** The figures listed so far, by cell and number. */
  get figures(): IJobFigure[] {
    return this._figures;
  }

  /** The image URL of a figure once it is loaded, else null. */
  src(name: string): string | null {
    return this._urls.get(name)?.url ?? null;
  }

  /** List the figures and load the new ones. */
  async fetch(): Promise<void> {
    if (this._done) {
      return;
    }
    const base = `jobs/${encodeURIComponent(this.jobId)}/figures`;
    let figures: IJobFigure[];
    let state: string | null;
    try {
      const response = await requestRaw(base, {}, this._settings);
      figures = JSON.parse((await response.text()) || '[]') as IJobFigure[];
      state = response.headers.get('X-Ptcuda-Job-State');
    } catch (error) {
      this._error = errorMessage(error);
      if (error instanceof ApiError && error.status === 404) {
        this._finish();
      }
      this._changed.emit();
      throw error;
    }
    this._error = '';
    for (const figure of figures) {
      const known = this._urls.get(figure.name);
      if (known && known.size === figure.size) {
        continue;
      }
      try {
        const response = await requestRaw(
          `${base}/${encodeURIComponent(figure.name)}`,
          {},
          this._settings
        );
        this._set(figure, await response.arrayBuffer());
      } catch (error) {
        this._error = `${figure.name}: ${errorMessage(error)}`;
      }
    }
    this._figures = figures;
    if (isTerminal(state)) {
      this._finish();
    }
    this._changed.emit();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    for (const { url } of this._urls.values()) {
      if (url.startsWith('blob:')) {
        URL.revokeObjectURL(url);
      }
    }
    this._urls.clear();
    super.dispose();
  }

  private _set(figure: IJobFigure, bytes: ArrayBuffer): void {
    const old = this._urls.get(figure.name)?.url;
    if (old?.startsWith('blob:')) {
      URL.revokeObjectURL(old);
    }
    const url =
      typeof URL.createObjectURL === 'function'
        ? URL.createObjectURL(new Blob([bytes], { type: 'image/png' }))
        : URLExt.join(
            this._settings.baseUrl,
            API_NAMESPACE,
            'jobs',
            encodeURIComponent(this.jobId),
            'figures',
            encodeURIComponent(figure.name)
          );
    this._urls.set(figure.name, { url, size: figure.size });
  }

  private _figures: IJobFigure[] = [];
  private _urls = new Map<string, { url: string; size: number }>();
}

export namespace JobFiguresModel {
  export interface IOptions {
    serverSettings?: ServerConnection.ISettings;
    /** ms between listings while the job runs (default 3000, backing off after errors). */
    pollInterval?: number;
    autoStart?: boolean;
  }
}
