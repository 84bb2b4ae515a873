/**
 * Notices: what was done to this server's kernels from outside (under the JupyterHub broker, a
 * kernel that held GPUs unused past the operator's idle timeout is shut down). Polls
 * `GET jupyter-ptcuda/notices?since=` and shows each notice once as a JupyterLab notification
 * that stays until the user closes it — also after a page reload (shown keys are remembered in
 * localStorage, per server).
 */
import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import { ApiError, requestAPI } from './request';

/** One notice of the REST API (openapi.yaml, /notices). */
export interface INotice {
  kind: string;
  state: 'requested' | 'done' | 'enforced';
  message: string;
  kernel_id?: string;
  notebook?: string | null;
  gpus?: string[];
  idle_s?: number;
  at: number;
  updated: number;
}

/** How a notice reaches the user (default: a JupyterLab warning notification). */
export type Notify = (notice: INotice, openNotebook?: () => void) => void;

export const OPEN_NOTEBOOK = 'Open notebook';

export function notifyWarning(
  notice: INotice,
  openNotebook?: () => void
): void {
  Notification.warning(notice.message, {
    autoClose: false,
    actions: openNotebook
      ? [{ label: OPEN_NOTEBOOK, callback: openNotebook }]
      : []
  });
}

const KEEP = 100;

export interface INoticesOptions {
  serverSettings: ServerConnection.ISettings;
  /** Seconds between polls (default 10). */
  interval?: number;
  notify?: Notify;
  openNotebook?: (path: string) => void;
  /** Where shown keys are remembered (default: window.localStorage when there is one). */
  storage?: Pick<Storage, 'getItem' | 'setItem'> | null;
}

export class NoticesPoller {
  constructor(options: INoticesOptions) {
    this._settings = options.serverSettings;
    this._interval = (options.interval ?? 10) * 1000;
    this._notify = options.notify ?? notifyWarning;
    this._open = options.openNotebook;
    this._storage =
      options.storage !== undefined
        ? options.storage
        : typeof localStorage !== 'undefined'
          ? localStorage
          : null;
    this._storageKey = `jupyter-ptcuda:notices-shown:${this._settings.baseUrl}`;
    this._shown = this._load();
  }

  /** True once the server said the extension is not there: polling stopped. */
  get stopped(): boolean {
    return this._stopped;
  }

  /** One poll: fetch notices changed since the last one and show the new ones. */
  async poll(): Promise<INotice[]> {
    if (this._stopped) {
      return [];
    }
    let notices: INotice[];
    try {
      const reply = await requestAPI<{ notices: INotice[] }>(
        `notices?since=${this._since}`,
        {},
        this._settings
      );
      notices = reply?.notices ?? [];
    } catch (error) {
      if (error instanceof ApiError && error.missing) {
        this.dispose();
      }
      return [];
    }
    const fresh: INotice[] = [];
    for (const notice of notices) {
      this._since = Math.max(this._since, notice.updated);
      const key = `${notice.at}:${notice.kernel_id ?? ''}`;
      if (this._shown.includes(key)) {
        continue;
      }
      this._shown.push(key);
      fresh.push(notice);
      const path = notice.notebook;
      this._notify(
        notice,
        path && this._open ? () => this._open!(path) : undefined
      );
    }
    if (fresh.length) {
      this._save();
    }
    return fresh;
  }

  /** Poll now and then every `interval` (skipped while the page is hidden). */
  start(): void {
    if (this._timer !== null || this._stopped) {
      return;
    }
    void this.poll();
    this._timer = setInterval(() => {
      if (typeof document === 'undefined' || !document.hidden) {
        void this.poll();
      }
    }, this._interval);
  }

  dispose(): void {
    this._stopped = true;
    if (this._timer !== null) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _load(): string[] {
    try {
      const raw = this._storage?.getItem(this._storageKey);
      const keys = raw ? JSON.parse(raw) : [];
      return Array.isArray(keys) ? keys.map(String) : [];
    } catch {
      return [];
    }
  }

  private _save(): void {
    this._shown = this._shown.slice(-KEEP);
    try {
      this._storage?.setItem(this._storageKey, JSON.stringify(this._shown));
    } catch {
      // storage full or disabled: shown again after a reload, nothing lost
    }
  }

  private _settings: ServerConnection.ISettings;
  private _interval: number;
  private _notify: Notify;
  private _open?: (path: string) => void;
  private _storage: Pick<Storage, 'getItem' | 'setItem'> | null;
  private _storageKey: string;
  private _shown: string[];
  private _since = 0;
  private _stopped = false;
  private _timer: ReturnType<typeof setInterval> | null = null;
}
