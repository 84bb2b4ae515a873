/**
 * Notices: what happened to this server's kernels that the user should hear of — under the
 * JupyterHub broker, a kernel that held GPUs unused past the operator's idle timeout is shut down;
 * on Kubernetes, a kernel's pod waits for a node (the scheduler's reason), then starts or is given
 * up; a kernel's missing image is pulled (then it starts, or fails with how to build it); a kernel
 * that asked for GPUs started on the CPU (why, and what to install). Polls `GET jupyter-ptcuda/notices?since=` and shows each notice once as a JupyterLab
 * notification — also not again after a page reload (shown keys are remembered in localStorage,
 * per server). When a notice shown on this page changes (waiting → started), its notification is
 * updated in place rather than a second one shown. While a notice shown here is `waiting` (an image
 * pull: "pulling IMAGE: 43% (1.2 of 2.8 GB)"; a pod waiting for a node) the poller asks every
 * `fastInterval` (1 s) instead of every `interval`, so the progress moves live.
 */
import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import { ApiError, requestAPI } from './request';

/** One notice of the REST API (openapi.yaml, /notices). */
export interface INotice {
  kind:
    | 'idle_gpu_kernel'
    | 'kernel_pending'
    | 'kernel_image'
    | 'gpu_fallback'
    | string;
  state: 'requested' | 'done' | 'enforced' | 'waiting' | 'started' | 'failed';
  message: string;
  kernel_id?: string;
  notebook?: string | null;
  gpus?: string[];
  idle_s?: number;
  /** kernel_image while waiting: the pull's bytes so far (of the layers whose size is known). */
  progress?: IPullProgress;
  at: number;
  updated: number;
}

/** Where an image pull stands (`progress` of a waiting kernel_image notice). */
export interface IPullProgress {
  done: number;
  total: number;
  percent: number;
  layers: number;
  waiting: number;
  extracted: number;
}

/**
 * How a notice reaches the user (default: a JupyterLab notification); it may return the
 * notification's id, so that a later change of the notice updates it (`Update`).
 */
export type Notify = (
  notice: INotice,
  openNotebook?: () => void
) => string | void;
export type Update = (id: string, notice: INotice) => void;

export const OPEN_NOTEBOOK = 'Open notebook';

/** How a notice looks: a kernel that started is good news and goes away by itself. */
export function noticeLook(notice: INotice): {
  type: 'warning' | 'error' | 'success' | 'in-progress';
  autoClose: number | false;
} {
  if (notice.kind === 'kernel_image' && notice.state === 'waiting') {
    return { type: 'in-progress', autoClose: false }; // a pull under way, its percentage in the message
  }
  if (
    (notice.kind === 'kernel_pending' || notice.kind === 'kernel_image') &&
    notice.state === 'started'
  ) {
    return { type: 'success', autoClose: 8000 };
  }
  if (notice.state === 'failed') {
    return { type: 'error', autoClose: false };
  }
  return { type: 'warning', autoClose: false };
}

export function notifyWarning(
  notice: INotice,
  openNotebook?: () => void
): string {
  const look = noticeLook(notice);
  return Notification.emit(notice.message, look.type, {
    autoClose: look.autoClose,
    actions: openNotebook
      ? [{ label: OPEN_NOTEBOOK, callback: openNotebook }]
      : []
  });
}

export function updateNotification(id: string, notice: INotice): void {
  const look = noticeLook(notice);
  Notification.update({
    id,
    message: notice.message,
    type: look.type,
    autoClose: look.autoClose
  });
}

const KEEP = 100;
/** How long one waiting notice keeps the polls fast (ms): the default pull_timeout, 900 s. */
const FAST_FOR = 900 * 1000;

export interface INoticesOptions {
  serverSettings: ServerConnection.ISettings;
  /** Seconds between polls (default 10). */
  interval?: number;
  /** Seconds between polls while a notice shown here is waiting (default 1). */
  fastInterval?: number;
  notify?: Notify;
  update?: Update;
  openNotebook?: (path: string) => void;
  /** Where shown keys are remembered (default: window.localStorage when there is one). */
  storage?: Pick<Storage, 'getItem' | 'setItem'> | null;
}

export class NoticesPoller {
  constructor(options: INoticesOptions) {
    this._settings = options.serverSettings;
    this._interval = (options.interval ?? 10) * 1000;
    this._fastInterval = (options.fastInterval ?? 1) * 1000;
    this._notify = options.notify ?? notifyWarning;
    this._update = options.update ?? updateNotification;
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
      if (notice.state === 'waiting') {
        if (!this._waiting.has(key)) {
          this._waiting.set(key, Date.now());
        }
      } else {
        this._waiting.delete(key);
      }
      if (this._shown.includes(key)) {
        const live = this._live.get(key);
        if (live && notice.updated > live.updated) {
          live.updated = notice.updated;
          this._update(live.id, notice); // the notification on this page says what changed
        }
        continue;
      }
      this._shown.push(key);
      fresh.push(notice);
      const path = notice.notebook;
      const id = this._notify(
        notice,
        path && this._open ? () => this._open!(path) : undefined
      );
      if (typeof id === 'string') {
        this._live.set(key, { id, updated: notice.updated });
      }
    }
    if (fresh.length) {
      this._save();
    }
    return fresh;
  }

  /** Seconds until the next poll: `fastInterval` while a notice is waiting, else `interval`. */
  get delay(): number {
    // a notice left waiting (its server gave up on it without a word) stops the fast polls after FAST_FOR
    const now = Date.now();
    for (const [key, since] of this._waiting) {
      if (now - since > FAST_FOR) {
        this._waiting.delete(key);
      }
    }
    return this._waiting.size ? this._fastInterval : this._interval;
  }

  /** Poll now and then every `delay` ms (skipped while the page is hidden). */
  start(): void {
    if (this._timer !== null || this._stopped) {
      return;
    }
    const tick = async () => {
      if (typeof document === 'undefined' || !document.hidden) {
        await this.poll();
      }
      if (!this._stopped) {
        this._timer = setTimeout(() => void tick(), this.delay);
      }
    };
    this._timer = setTimeout(() => void tick(), 0);
  }

  dispose(): void {
    this._stopped = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
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
  private _fastInterval: number;
  private _waiting = new Map<string, number>();
  private _notify: Notify;
  private _update: Update;
  private _live = new Map<string, { id: string; updated: number }>();
  private _open?: (path: string) => void;
  private _storage: Pick<Storage, 'getItem' | 'setItem'> | null;
  private _storageKey: string;
  private _shown: string[];
  private _since = 0;
  private _stopped = false;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}
