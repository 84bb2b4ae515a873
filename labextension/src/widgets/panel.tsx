import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { ActiveKernel } from '../activekernel';
import { BuildsModel, IBuild } from '../builds';
import { HealthModel } from '../health';
import { GpuModel } from '../model';
import { GpuCard } from './gpucard';
import { HealthView } from './healthview';
import { WaitingList } from './waiting';

export interface IGpuPanelOptions {
  model: GpuModel;
  health: HealthModel;
  active: ActiveKernel;
  /** Default image for the health form (settings). */
  defaultImage: () => string;
  openNotebook: (path: string) => void;
  openJobs: () => void;
  /** Open jupyter-ptcuda's documentation (the Help menu's command). */
  openDocs?: () => void;
  /** Image builds in progress (`jupyter ptcuda image build`): shown while one runs. */
  builds?: BuildsModel;
}

/** "building IMAGE: step 4/6 installing packages…" and the build's last line, under it. */
export function BuildsView(props: { builds: IBuild[] }): JSX.Element | null {
  const running = props.builds.filter(b => b.state === 'running');
  if (!running.length) {
    return null;
  }
  return (
    <section className="jp-ptcuda-Section" aria-label="Image builds">
      <h2 className="jp-ptcuda-Section-title">Image builds</h2>
      {running.map(b => (
        <div
          key={b.id}
          className="jp-ptcuda-Build"
          data-build-id={b.id}
          role="status"
        >
          <div className="jp-ptcuda-Build-message">
            {b.message}
            {'…'}
          </div>
          {b.step > 0 && (
            <progress
              className="jp-ptcuda-Build-progress"
              max={b.steps}
              value={b.step - 1}
              aria-label={`step ${b.step} of ${b.steps}`}
            />
          )}
          {b.last_line && (
            <div
              className="jp-ptcuda-muted jp-ptcuda-Build-line"
              title={b.last_line}
            >
              {b.last_line}
            </div>
          )}
        </div>
      ))}
    </section>
  );
}

/** What the panel says when there are no GPU cards to show: never a blank panel. */
export function StatusMessage(props: { model: GpuModel }): JSX.Element | null {
  const { model } = props;
  switch (model.status) {
    case 'missing':
      return (
        <div className="jp-ptcuda-error jp-ptcuda-Status-missing" role="alert">
          <strong>Server extension not available</strong>
          <div>{model.error}</div>
        </div>
      );
    case 'error':
      return (
        <div className="jp-ptcuda-error jp-ptcuda-Status-error" role="alert">
          <strong>Cannot read the GPUs</strong>
          <div>{model.error}</div>
          <div className="jp-ptcuda-muted">Retrying, less and less often.</div>
        </div>
      );
    case 'unavailable':
      return (
        <div
          className="jp-ptcuda-notice jp-ptcuda-Status-unavailable"
          role="status"
        >
          <strong>No NVIDIA driver on this host</strong>
          <div>{model.snapshot?.reason ?? 'NVML is not available.'}</div>
          <div className="jp-ptcuda-muted">
            Kernels and jobs can still run on the CPU; health checks still
            report what an image has.
          </div>
        </div>
      );
    case 'loading':
      return (
        <div className="jp-ptcuda-muted jp-ptcuda-Status-loading" role="status">
          Reading the GPUs…
        </div>
      );
    default:
      if (model.snapshot && model.snapshot.gpus.length === 0) {
        return (
          <div className="jp-ptcuda-notice" role="status">
            <strong>No GPUs</strong>
            <div>The NVIDIA driver answers but lists no GPU.</div>
          </div>
        );
      }
      return null;
  }
}

function PanelView(props: IGpuPanelOptions): JSX.Element {
  const { model, active } = props;
  const kernelId = active.kernelId;
  const snapshot = model.snapshot;
  const notebookOf = (kid: string) =>
    model.kernel(kid)?.notebook ?? (kid === kernelId ? active.path : null);
  return (
    <div className="jp-ptcuda-Panel-body">
      <section className="jp-ptcuda-Section" aria-label="GPUs">
        <h2 className="jp-ptcuda-Section-title">GPUs</h2>
        {snapshot && snapshot.state === 'ok' && (
          <div className="jp-ptcuda-muted jp-ptcuda-Driver">
            Driver {snapshot.driver_version ?? '?'} · CUDA{' '}
            {snapshot.cuda_driver_version ?? '?'}
          </div>
        )}
        <StatusMessage model={model} />
        {model.status === 'ok' &&
          snapshot?.gpus.map(gpu => (
            <GpuCard
              key={gpu.uuid ?? gpu.index}
              gpu={gpu}
              series={gpu.uuid ? model.history[gpu.uuid] : undefined}
              activeKernelId={kernelId}
              onOpenNotebook={props.openNotebook}
            />
          ))}
      </section>
      {model.status === 'ok' && (
        <WaitingList waiting={model.queue} at={model.queueReadAt} />
      )}
      {props.builds && <BuildsView builds={props.builds.builds} />}
      {model.status !== 'missing' && (
        <section className="jp-ptcuda-Section" aria-label="Health">
          <h2 className="jp-ptcuda-Section-title">Health</h2>
          <HealthView
            model={props.health}
            kernelId={kernelId}
            notebookPath={active.path}
            defaultImage={props.defaultImage()}
            notebookOf={notebookOf}
          />
        </section>
      )}
      {model.status !== 'missing' && (
        <section className="jp-ptcuda-Section" aria-label="Jobs">
          <h2 className="jp-ptcuda-Section-title">Training jobs</h2>
          <button
            className="jp-Button jp-mod-styled jp-ptcuda-OpenJobs"
            onClick={props.openJobs}
          >
            Show jobs
          </button>
        </section>
      )}
      {props.openDocs && (
        <p className="jp-ptcuda-Panel-help">
          <a
            href="#"
            onClick={e => {
              e.preventDefault();
              props.openDocs?.();
            }}
          >
            jupyter-ptcuda help
          </a>{' '}
          <span className="jp-ptcuda-muted">
            (GPUs, kernels, health checks, jobs)
          </span>
        </p>
      )}
    </div>
  );
}

/**
 * The right-side "GPUs" panel. Tells the model when it is shown or hidden so that polling is
 * fast only while someone looks at it.
 */
export class GpuPanel extends ReactWidget {
  constructor(private _options: IGpuPanelOptions) {
    super();
    this.addClass('jp-ptcuda-Panel');
    _options.model.changed.connect(this._update, this);
    _options.health.changed.connect(this._update, this);
    _options.active.changed.connect(this._update, this);
    _options.builds?.changed.connect(this._update, this);
  }

  protected render(): JSX.Element {
    return <PanelView {...this._options} />;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._options.model.panelVisible = true;
    this._setBuildsVisible(true);
    this.update();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._options.model.panelVisible = false;
    this._setBuildsVisible(false);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._options.model.panelVisible = this.isVisible;
    this._setBuildsVisible(this.isVisible);
  }

  protected onBeforeDetach(msg: Message): void {
    this._options.model.panelVisible = false;
    this._setBuildsVisible(false);
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._options.model.changed.disconnect(this._update, this);
    this._options.health.changed.disconnect(this._update, this);
    this._options.active.changed.disconnect(this._update, this);
    this._options.builds?.changed.disconnect(this._update, this);
    super.dispose();
  }

  private _setBuildsVisible(visible: boolean): void {
    if (this._options.builds) {
      this._options.builds.visible = visible;
    }
  }

  private _update(): void {
    if (this.isVisible) {
      this.update();
    }
  }
}
