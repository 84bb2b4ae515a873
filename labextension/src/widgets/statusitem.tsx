import { ReactWidget } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

import { ActiveKernel } from '../activekernel';
import { formatBytes, formatMemory } from '../format';
import { GpuModel } from '../model';

/**
 * The status-bar text for the active kernel: its GPU(s) and memory, "no GPU" for a container
 * kernel without one, or null (hidden) for kernels that are not ours or when nothing is known.
 */
export function statusText(
  model: GpuModel,
  kernelId: string | null
): { text: string; title: string } | null {
  if (!kernelId || model.status === 'missing') {
    return null;
  }
  const info = model.kernel(kernelId);
  const gpus = model.kernelGpus(kernelId);
  if (!gpus.length) {
    if (info && info.in_container) {
      return {
        text: 'GPU: none',
        title: `This kernel runs in container ${info.container_id ?? ''} (${info.image ?? 'image ?'}) without a GPU.`
      };
    }
    return null;
  }
  const ids = gpus.map(g => g.index).join(',');
  const own = model.kernelMemory(kernelId);
  const used = gpus.reduce((sum, g) => sum + (g.memory_used ?? 0), 0);
  const total = gpus.reduce((sum, g) => sum + (g.memory_total ?? 0), 0);
  const text =
    own !== null
      ? `GPU ${ids} · ${formatBytes(own)} (${formatMemory(used, total)})`
      : `GPU ${ids} · ${formatMemory(used, total)}`;
  const title =
    gpus
      .map(
        g =>
          `GPU ${g.index}: ${g.name ?? ''}, ${g.utilization_gpu ?? '–'}% busy`
      )
      .join('\n') +
    (own !== null
      ? `\nThis kernel's processes use ${formatBytes(own)}.`
      : '\nMemory: the whole GPU (all its processes).');
  return { text, title };
}

/** Status-bar item: the active kernel's GPUs and memory; a click opens the GPU panel. */
export class GpuStatusItem extends ReactWidget {
  constructor(
    private _model: GpuModel,
    private _active: ActiveKernel,
    private _onClick: () => void
  ) {
    super();
    this.addClass('jp-ptcuda-StatusItem');
    _model.changed.connect(this._onChange, this);
    _active.changed.connect(this._onChange, this);
  }

  /** Emitted when what the item shows may have changed (the status bar re-checks `hasContent`). */
  get contentChanged(): ISignal<this, void> {
    return this._contentChanged;
  }

  /** Whether there is something to show (the status bar hides the item otherwise). */
  get hasContent(): boolean {
    return statusText(this._model, this._active.kernelId) !== null;
  }

  protected render(): JSX.Element | null {
    const content = statusText(this._model, this._active.kernelId);
    if (!content) {
      return null;
    }
    return (
      <span
        className="jp-ptcuda-StatusItem-text"
        title={content.title}
        onClick={this._onClick}
      >
        {content.text}
      </span>
    );
  }

  dispose(): void {
    this._model.changed.disconnect(this._onChange, this);
    this._active.changed.disconnect(this._onChange, this);
    super.dispose();
  }

  private _onChange(): void {
    this.update();
    this._contentChanged.emit();
  }

  private _contentChanged = new Signal<this, void>(this);
}
