/**
 * Image builds in progress (`GET jupyter-ptcuda/builds`): what `jupyter ptcuda image build` publishes
 * in the user's Jupyter runtime dir, for the GPU panel ("building IMAGE: step 4/6 installing
 * packages"). One {@link Poll}, every 2 s while the panel is shown, standing by otherwise.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { ServerConnection } from '@jupyterlab/services';

import { requestAPI } from './request';

/** One build (openapi.yaml, /builds). */
export interface IBuild {
  id: string;
  tag: string;
  state: 'running' | 'built' | 'failed' | 'interrupted';
  step: number;
  steps: number;
  step_name?: string;
  last_line?: string;
  message: string;
  started?: number;
  finished?: number | null;
  error?: string | null;
}

export class BuildsModel implements IDisposable {
  constructor(
    options: {
      serverSettings?: ServerConnection.ISettings;
      interval?: number;
      autoStart?: boolean;
    } = {}
  ) {
    this._settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this.fetch(),
      frequency: {
        interval: options.interval ?? 2000,
        backoff: true,
        max: 60000
      },
      name: 'jupyter-ptcuda:BuildsModel#builds',
      standby: () => (this._visible ? 'when-hidden' : true)
    });
  }

  /** Builds running now or finished in the last minutes, newest first. */
  get builds(): IBuild[] {
    return this._builds;
  }

  /** The ones still running. */
  get running(): IBuild[] {
    return this._builds.filter(b => b.state === 'running');
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Set by the panel when it is shown or hidden. */
  set visible(value: boolean) {
    if (value !== this._visible) {
      this._visible = value;
      if (value) {
        void this._poll.refresh();
      }
    }
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  async fetch(): Promise<void> {
    const reply = await requestAPI<{ builds: IBuild[] }>(
      'builds',
      {},
      this._settings
    );
    this._builds = reply?.builds ?? [];
    this._changed.emit();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _settings: ServerConnection.ISettings;
  private _poll: Poll;
  private _builds: IBuild[] = [];
  private _visible = false;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}
