/**
 * The notebook toolbar's "Open terminal in kernel container" button: one per notebook panel, shown
 * only while that panel's kernel is one of ours (its kernelspec uses jupyter-ptcuda's provisioner,
 * as `ActiveKernel.isContainerKernel` decides for the active notebook), and opening the terminal in
 * *that* panel's kernel container (not whichever notebook has focus). Registered in index.ts as a
 * widget extension of the Notebook factory.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { KernelSpec } from '@jupyterlab/services';
import { terminalIcon, ToolbarButton } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { PROVISIONER_NAME } from './activekernel';

/** The toolbar item's name (and the button's class, for tests and styling). */
export const TERMINAL_BUTTON = 'ptcuda-kernel-terminal';
export const TERMINAL_BUTTON_TOOLTIP = 'Open terminal in kernel container';

/** Whether kernelspec `name` is one of jupyter-ptcuda's container kernels. */
export function isContainerKernelSpec(
  name: string | undefined,
  specs: KernelSpec.IManager | null
): boolean {
  const spec = name ? specs?.specs?.kernelspecs[name] : undefined;
  return (
    (spec?.metadata as any)?.kernel_provisioner?.provisioner_name ===
    PROVISIONER_NAME
  );
}

/** A widget extension of the Notebook factory (`docRegistry.addWidgetExtension('Notebook', ...)`). */
export class KernelTerminalButton {
  /**
   * @param open opens a terminal in the container of the kernel with this id (the
   *   `jupyter-ptcuda:open-kernel-terminal` path: POST jupyter-ptcuda/terminals, then terminal:open).
   * @param specs the kernelspecs, to tell our kernels from others.
   */
  constructor(
    private _open: (kernelId: string) => unknown,
    private _specs: KernelSpec.IManager | null
  ) {}

  createNew(panel: NotebookPanel): IDisposable {
    const session = panel.sessionContext;
    const kernel = () => session.session?.kernel ?? null;
    const button = new ToolbarButton({
      icon: terminalIcon,
      tooltip: TERMINAL_BUTTON_TOOLTIP,
      onClick: () => {
        const k = kernel();
        if (k && isContainerKernelSpec(k.name, this._specs)) {
          void this._open(k.id);
        }
      }
    });
    button.addClass('jp-ptcuda-KernelTerminalButton');
    button.node.dataset.ptcuda = TERMINAL_BUTTON;
    const sync = () =>
      button.setHidden(!isContainerKernelSpec(kernel()?.name, this._specs));
    sync();
    session.kernelChanged.connect(sync);
    session.sessionChanged.connect(sync);
    this._specs?.specsChanged.connect(sync);
    panel.toolbar.insertItem(10, TERMINAL_BUTTON, button);
    return new DisposableDelegate(() => {
      session.kernelChanged.disconnect(sync);
      session.sessionChanged.disconnect(sync);
      this._specs?.specsChanged.disconnect(sync);
      button.dispose();
    });
  }
}
