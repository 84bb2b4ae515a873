/**
 * The active notebook and its kernel, followed through the notebook tracker: which notebook has
 * focus, and kernel restarts/changes inside it. The panel highlights this kernel, the status bar
 * shows its GPUs, the health button checks it.
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { KernelSpec } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

/** The provisioner of jupyter-ptcuda's kernelspecs (`jupyter ptcuda kernelspec install`). */
export const PROVISIONER_NAME = 'ptcuda-docker-provisioner';

export class ActiveKernel {
  constructor(
    private _tracker: INotebookTracker | null,
    private _specs: KernelSpec.IManager | null = null
  ) {
    if (_tracker) {
      _tracker.currentChanged.connect(this._onCurrentChanged, this);
      this._onCurrentChanged();
    }
    _specs?.specsChanged.connect(this._emit, this);
  }

  /** The active notebook panel, or null. */
  get notebook(): NotebookPanel | null {
    return this._tracker?.currentWidget ?? null;
  }

  /** The active notebook's path (relative to the server root), or null. */
  get path(): string | null {
    return this.notebook?.context.path ?? null;
  }

  /** The active notebook's kernel id, or null. */
  get kernelId(): string | null {
    return this.notebook?.sessionContext.session?.kernel?.id ?? null;
  }

  /** Whether the active kernel's spec uses jupyter-ptcuda's provisioner (a container kernel). */
  get isContainerKernel(): boolean {
    const name = this.notebook?.sessionContext.session?.kernel?.name;
    const spec = name ? this._specs?.specs?.kernelspecs[name] : undefined;
    const provisioner = (spec?.metadata as any)?.kernel_provisioner
      ?.provisioner_name;
    return provisioner === PROVISIONER_NAME;
  }

  /** The image of the active kernel's spec (`kernel_provisioner.config.image`), else of the first
   * jupyter-ptcuda kernelspec installed, else ''. The health panel proposes it for an image check. */
  get image(): string {
    const specs = this._specs?.specs?.kernelspecs ?? {};
    const imageOf = (spec: any): string => {
      const p = spec?.metadata?.kernel_provisioner;
      return p?.provisioner_name === PROVISIONER_NAME &&
        typeof p?.config?.image === 'string'
        ? p.config.image
        : '';
    };
    const name = this.notebook?.sessionContext.session?.kernel?.name;
    const own = name ? imageOf(specs[name]) : '';
    if (own) {
      return own;
    }
    for (const spec of Object.values(specs)) {
      const image = imageOf(spec);
      if (image) {
        return image;
      }
    }
    return '';
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  private _onCurrentChanged(): void {
    const current = this.notebook;
    if (this._watched && this._watched !== current) {
      this._watched.sessionContext.kernelChanged.disconnect(this._emit, this);
      this._watched.sessionContext.sessionChanged.disconnect(this._emit, this);
      this._watched.sessionContext.statusChanged.disconnect(
        this._onStatus,
        this
      );
    }
    if (current && this._watched !== current) {
      current.sessionContext.kernelChanged.connect(this._emit, this);
      current.sessionContext.sessionChanged.connect(this._emit, this);
      current.sessionContext.statusChanged.connect(this._onStatus, this);
    }
    this._watched = current;
    this._emit();
  }

  private _onStatus(): void {
    const id = this.kernelId;
    if (id !== this._lastId) {
      this._emit();
    }
  }

  private _emit(): void {
    this._lastId = this.kernelId;
    this._changed.emit();
  }

  private _watched: NotebookPanel | null = null;
  private _lastId: string | null = null;
  private _changed = new Signal<this, void>(this);
}
