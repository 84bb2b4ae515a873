/**
 * Health checks: start one (`POST health`), follow it (`GET health/<id>`) until it is done, keep
 * the recent ones for the panel. Failures sort first.
 */
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, errorMessage, postJSON, requestAPI } from './request';
import { CheckStatus, ICheck, IHealth, IHealthRequest } from './tokens';

/** Sort order of check statuses: what needs attention first. */
export const STATUS_ORDER: { [s in CheckStatus]: number } = {
  fail: 0,
  warn: 1,
  pass: 2,
  skip: 3
};

/** The checks with failures first, then warnings, passes, skips (stable within a status). */
export function sortChecks(checks: ICheck[]): ICheck[] {
  return checks
    .map((check, i) => ({ check, i }))
    .sort(
      (a, b) =>
        (STATUS_ORDER[a.check.status] ?? 9) -
          (STATUS_ORDER[b.check.status] ?? 9) || a.i - b.i
    )
    .map(x => x.check);
}

/** How many checks have each status. */
export function countChecks(checks: ICheck[]): { [s in CheckStatus]: number } {
  const out = { fail: 0, warn: 0, pass: 0, skip: 0 };
  for (const c of checks) {
    if (c.status in out) {
      out[c.status]++;
    }
  }
  return out;
}

/** Headline of an error: the Docker engine gets its own plain words. */
export function errorTitle(reason: string | null | undefined): string {
  switch (reason) {
    case 'EngineUnavailable':
      return 'Docker engine not available';
    case 'ImageNotFound':
      return 'Image not found';
    case 'NotFound':
      return 'Not found';
    default:
      return 'Health check failed to run';
  }
}

const CLEARED_KEY = 'jupyter-ptcuda:health-cleared-before';

export class HealthModel {
  constructor(options: HealthModel.IOptions = {}) {
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._pollInterval = options.pollInterval ?? 1000;
  }

  /** Recent checks, newest first. */
  get checks(): IHealth[] {
    return this._checks;
  }

  /** The last failure to start a check (400/404/503...), or null. */
  get startError(): ApiError | null {
    return this._startError;
  }

  /** Whether the server's recent checks have been loaded (after a page reload). */
  get loaded(): boolean {
    return this._loaded;
  }

  get running(): boolean {
    return this._checks.some(c => c.state === 'running');
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /**
   * Start a check and follow it to the end. Resolves with the finished entry (state `done` or
   * `error`); rejects with an {@link ApiError} if the server refuses to start it.
   */
  async run(request: IHealthRequest): Promise<IHealth> {
    this._startError = null;
    let entry: IHealth;
    try {
      entry = await postJSON<IHealth>('health', request, this._settings);
    } catch (error) {
      this._startError =
        error instanceof ApiError
          ? error
          : new ApiError(errorMessage(error), 0, null);
      this._changed.emit();
      throw this._startError;
    }
    this._upsert(entry);
    return this._follow(entry);
  }

  /**
   * Load the server's recent checks (`GET health`: they outlive a page reload) and follow those
   * still running. Errors are ignored: the panel says what is wrong elsewhere.
   */
  async load(): Promise<void> {
    let entries: IHealth[];
    try {
      entries =
        (await requestAPI<IHealth[]>('health', {}, this._settings)) ?? [];
    } catch {
      return;
    } finally {
      this._loaded = true;
      this._changed.emit();
    }
    const known = new Set(this._checks.map(c => c.id));
    const cleared = this._clearedBefore();
    const fresh = entries.filter(
      e => !known.has(e.id) && (e.state === 'running' || e.created > cleared)
    );
    if (!fresh.length) {
      return;
    }
    this._checks = [...this._checks, ...fresh]
      .sort((a, b) => b.created - a.created)
      .slice(0, 20);
    this._changed.emit();
    for (const entry of fresh) {
      if (entry.state === 'running') {
        void this._follow(entry);
      }
    }
  }

  /** Poll `GET health/<id>` until the check is no longer running. */
  private async _follow(entry: IHealth): Promise<IHealth> {
    let delay = this._pollInterval;
    while (entry.state === 'running') {
      await sleep(delay);
      delay = Math.min(delay * 1.5, 5000);
      try {
        entry = await requestAPI<IHealth>(
          `health/${encodeURIComponent(entry.id)}`,
          {},
          this._settings
        );
      } catch (error) {
        entry = {
          ...entry,
          state: 'error',
          error: {
            message: errorMessage(error),
            reason: error instanceof ApiError ? error.reason : null
          }
        };
      }
      this._upsert(entry);
    }
    return entry;
  }

  /** Forget the finished checks (also after a reload: the time is kept in this browser). */
  clear(): void {
    const newest = Math.max(0, ...this._checks.map(c => c.created));
    try {
      window.localStorage.setItem(CLEARED_KEY, String(newest));
    } catch {
      /* no storage: cleared until the next reload */
    }
    this._checks = this._checks.filter(c => c.state === 'running');
    this._startError = null;
    this._changed.emit();
  }

  /** `created` of the newest check cleared in this browser (0: none). */
  private _clearedBefore(): number {
    try {
      return Number(window.localStorage.getItem(CLEARED_KEY) ?? 0) || 0;
    } catch {
      return 0;
    }
  }

  private _upsert(entry: IHealth): void {
    const others = this._checks.filter(c => c.id !== entry.id);
    this._checks = [entry, ...others]
      .sort((a, b) => b.created - a.created)
      .slice(0, 20);
    this._changed.emit();
  }

  private _settings: ServerConnection.ISettings;
  private _pollInterval: number;
  private _checks: IHealth[] = [];
  private _startError: ApiError | null = null;
  private _loaded = false;
  private _changed = new Signal<this, void>(this);
}

export namespace HealthModel {
  export interface IOptions {
    serverSettings?: ServerConnection.ISettings;
    /** ms before the first `GET health/<id>` (then ×1.5 up to 5 s; default 1000). */
    pollInterval?: number;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}
