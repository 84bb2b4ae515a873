/**
 * The GPU monitor: one {@link Poll} of `GET gpus` (+ `GET kernels`, and `GET queue` while the panel
 * is shown: its "Waiting" list) shared by the panel and the status bar. It polls fast while the panel is visible, slowly while only the status bar needs it,
 * not at all when nothing shows it or the browser tab is hidden (`standby`), and backs off after
 * errors (as jupyter-resource-usage's model does).
 */
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { lastTime, mergeHistory } from './history';
import { ApiError, errorMessage, requestAPI } from './request';
import {
  History,
  IGpu,
  IGpuMonitor,
  IGpusReply,
  IKernelInfo,
  IQueueEntry,
  IQueueReply,
  ISnapshot,
  MonitorStatus
} from './tokens';

export class GpuModel implements IGpuMonitor, IDisposable {
  constructor(options: GpuModel.IOptions = {}) {
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._interval = options.refreshInterval ?? 2000;
    this._statusInterval = options.statusBarInterval ?? 10000;
    this._windowSeconds = (options.historyMinutes ?? 10) * 60;
    this._maxPoints = options.maxPoints ?? 600;
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this.fetch(),
      frequency: this._frequency(),
      name: 'jupyter-ptcuda:GpuModel#gpus',
      standby: () => (this.wanted ? 'when-hidden' : true)
    });
  }

  get status(): MonitorStatus {
    return this._status;
  }

  get snapshot(): ISnapshot | null {
    return this._snapshot;
  }

  get history(): History {
    return this._history;
  }

  get kernels(): IKernelInfo[] {
    return this._kernels;
  }

  /** The GPU queue as of the last poll while the panel was shown, in order ([]: nothing waits). */
  get queue(): IQueueEntry[] {
    return this._queue;
  }

  /** When the queue was read (`Date.now()`): its `waited_s` plus the time since is how long each has waited. */
  get queueReadAt(): number {
    return this._queueAt;
  }

  get error(): string {
    return this._error;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The poll (for tests and for tuning). */
  get poll(): Poll {
    return this._poll;
  }

  /** Whether something visible needs the data (else the poll stands by). */
  get wanted(): boolean {
    return this._panelVisible || this._statusBarEnabled;
  }

  /** Set by the panel when it is shown or hidden: fast polling while shown. */
  get panelVisible(): boolean {
    return this._panelVisible;
  }
  set panelVisible(value: boolean) {
    if (value === this._panelVisible) {
      return;
    }
    this._panelVisible = value;
    this._poll.frequency = this._frequency();
    if (value) {
      void this._poll.refresh();
    }
  }

  /** Whether the status-bar item is shown (slow polling while the panel is hidden). */
  get statusBarEnabled(): boolean {
    return this._statusBarEnabled;
  }
  set statusBarEnabled(value: boolean) {
    if (value === this._statusBarEnabled) {
      return;
    }
    this._statusBarEnabled = value;
    this._poll.frequency = this._frequency();
    if (value) {
      void this._poll.refresh();
    }
  }

  /** Milliseconds between refreshes while the panel is visible. */
  get refreshInterval(): number {
    return this._interval;
  }
  set refreshInterval(ms: number) {
    this._interval = Math.max(250, ms);
    this._poll.frequency = this._frequency();
  }

  /** Milliseconds between refreshes while only the status bar needs data. */
  set statusBarInterval(ms: number) {
    this._statusInterval = Math.max(1000, ms);
    this._poll.frequency = this._frequency();
  }

  /** Minutes of history the charts keep. */
  set historyMinutes(minutes: number) {
    this._windowSeconds = Math.max(1, minutes) * 60;
    this._history = mergeHistory(
      this._history,
      {},
      this._windowSeconds,
      this._maxPoints
    );
    this._changed.emit();
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Refresh now (the next poll tick runs immediately). */
  async refresh(): Promise<void> {
    await this._poll.refresh();
    await this._poll.tick;
  }

  /**
   * One request round: `GET gpus` (only history newer than what we have) and `GET kernels`.
   * Rejects after an error so that the poll backs off; the status and message are set first.
   */
  async fetch(): Promise<void> {
    const since = lastTime(this._history);
    const query =
      since === null
        ? `gpus?max_points=${this._maxPoints}`
        : `gpus?since=${since}&max_points=${this._maxPoints}`;
    try {
      const [reply, kernels, queue] = await Promise.all([
        requestAPI<IGpusReply>(query, {}, this._settings),
        requestAPI<IKernelInfo[]>('kernels', {}, this._settings).catch(
          (error: unknown) => {
            if (error instanceof ApiError && error.missing) {
              throw error;
            }
            return this._kernels; // keep the last list; the GPU part still works
          }
        ),
        this._panelVisible ? this._fetchQueue() : Promise.resolve(this._queue)
      ]);
      this._snapshot = reply.snapshot;
      this._kernels = kernels ?? [];
      this._queue = queue;
      this._history = mergeHistory(
        this._history,
        reply.history ?? {},
        this._windowSeconds,
        this._maxPoints
      );
      this._error = '';
      this._status =
        reply.snapshot.state === 'unavailable'
          ? 'unavailable'
          : reply.snapshot.state === 'starting'
            ? 'loading'
            : 'ok';
      this._changed.emit();
    } catch (error) {
      this._status =
        error instanceof ApiError && error.missing ? 'missing' : 'error';
      this._error = errorMessage(error);
      this._changed.emit();
      throw error;
    }
  }

  /** `GET queue`'s waiting list; a server without it (404) has none; after another error, the last list. */
  private async _fetchQueue(): Promise<IQueueEntry[]> {
    try {
      const reply = await requestAPI<IQueueReply>('queue', {}, this._settings);
      this._queueAt = Date.now();
      return reply?.waiting ?? [];
    } catch (error) {
      return error instanceof ApiError && error.status === 404
        ? []
        : this._queue;
    }
  }

  /** The kernel's entry of `GET kernels`, if the server knows it. */
  kernel(kernelId: string | null | undefined): IKernelInfo | null {
    if (!kernelId) {
      return null;
    }
    return this._kernels.find(k => k.kernel_id === kernelId) ?? null;
  }

  /** The GPUs a kernel holds: from `GET kernels` (index or uuid) and the holders. */
  kernelGpus(kernelId: string | null | undefined): IGpu[] {
    if (!kernelId || !this._snapshot) {
      return [];
    }
    const info = this.kernel(kernelId);
    const wanted = new Set(info?.gpus ?? []);
    return this._snapshot.gpus.filter(
      gpu =>
        wanted.has(String(gpu.index)) ||
        (gpu.uuid && wanted.has(gpu.uuid)) ||
        (gpu.holders ?? []).some(h => h.kind === 'kernel' && h.id === kernelId)
    );
  }

  /**
   * GPU memory a kernel uses: the sum of its processes where NVML attributes them, else null
   * (then show the GPUs' totals).
   */
  kernelMemory(kernelId: string | null | undefined): number | null {
    if (!kernelId || !this._snapshot) {
      return null;
    }
    let total = 0;
    let found = false;
    for (const gpu of this._snapshot.gpus) {
      for (const p of gpu.processes ?? []) {
        if (p.owner === kernelId && typeof p.used_memory === 'number') {
          total += p.used_memory;
          found = true;
        }
      }
    }
    return found ? total : null;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _frequency(): IPoll.Frequency {
    const interval = this._panelVisible ? this._interval : this._statusInterval;
    return { interval, backoff: true, max: Math.max(60000, interval * 4) };
  }

  private _settings: ServerConnection.ISettings;
  private _interval: number;
  private _statusInterval: number;
  private _windowSeconds: number;
  private _maxPoints: number;
  private _panelVisible = false;
  private _statusBarEnabled = false;
  private _status: MonitorStatus = 'loading';
  private _snapshot: ISnapshot | null = null;
  private _history: History = {};
  private _kernels: IKernelInfo[] = [];
  private _queue: IQueueEntry[] = [];
  private _queueAt = 0;
  private _error = '';
  private _changed = new Signal<this, void>(this);
  private _poll: Poll;
}

export namespace GpuModel {
  export interface IOptions {
    serverSettings?: ServerConnection.ISettings;
    /** ms between refreshes while the panel is visible (default 2000). */
    refreshInterval?: number;
    /** ms between refreshes while only the status bar is shown (default 10000). */
    statusBarInterval?: number;
    /** Minutes of history kept for the charts (default 10). */
    historyMinutes?: number;
    /** Points per GPU kept (and asked for) at most (default 600). */
    maxPoints?: number;
    /** Start polling at once (default true; tests call `fetch` themselves). */
    autoStart?: boolean;
  }
}
