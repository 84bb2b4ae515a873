import { ToolbarButton } from '@jupyterlab/ui-components';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { PROVISIONER_NAME } from '../activekernel';
import {
  isContainerKernelSpec,
  KernelTerminalButton,
  TERMINAL_BUTTON,
  TERMINAL_BUTTON_TOOLTIP
} from '../terminalbutton';

const ours = {
  name: 'ptcuda-gpu',
  metadata: { kernel_provisioner: { provisioner_name: PROVISIONER_NAME } }
};
const plain = { name: 'python3', metadata: {} };

function fakeSpecs() {
  const owner = {};
  return {
    specs: {
      default: 'python3',
      kernelspecs: { 'ptcuda-gpu': ours, python3: plain }
    },
    specsChanged: new Signal<any, any>(owner)
  } as any;
}

/** A notebook panel as far as the button sees one: its session's kernel and its toolbar. */
function fakePanel(kernel: { id: string; name: string } | null) {
  const owner = {};
  const items: Array<[number, string, Widget]> = [];
  const sessionContext = {
    session: kernel ? { kernel } : null,
    kernelChanged: new Signal<any, any>(owner),
    sessionChanged: new Signal<any, any>(owner)
  };
  const panel = {
    sessionContext,
    toolbar: {
      insertItem: (i: number, name: string, w: Widget) =>
        void items.push([i, name, w])
    }
  } as any;
  const button = () => items[0][2] as ToolbarButton;
  const setKernel = (k: { id: string; name: string } | null) => {
    sessionContext.session = k ? { kernel: k } : null;
    sessionContext.kernelChanged.emit(undefined);
  };
  return { panel, items, button, setKernel };
}

describe('KernelTerminalButton', () => {
  it('is shown for a container kernel and opens the terminal in that panel’s kernel', () => {
    const opened: string[] = [];
    const ext = new KernelTerminalButton(id => opened.push(id), fakeSpecs());
    const p = fakePanel({ id: 'k-ours', name: 'ptcuda-gpu' });
    ext.createNew(p.panel);
    expect(p.items.map(([, name]) => name)).toEqual([TERMINAL_BUTTON]);
    const button = p.button();
    expect(button.isHidden).toBe(false);
    expect(button.node.dataset.ptcuda).toBe(TERMINAL_BUTTON);
    expect((button as any).props.tooltip).toBe(TERMINAL_BUTTON_TOOLTIP);
    button.onClick();
    expect(opened).toEqual(['k-ours']);
  });

  it('is hidden for another kernel, and follows kernel changes', () => {
    const opened: string[] = [];
    const ext = new KernelTerminalButton(id => opened.push(id), fakeSpecs());
    const p = fakePanel({ id: 'k-py', name: 'python3' });
    ext.createNew(p.panel);
    expect(p.button().isHidden).toBe(true);
    p.button().onClick(); // e.g. a keyboard shortcut on a hidden button: still nothing
    expect(opened).toEqual([]);

    p.setKernel({ id: 'k-new', name: 'ptcuda-gpu' });
    expect(p.button().isHidden).toBe(false);
    p.button().onClick();
    expect(opened).toEqual(['k-new']);

    p.setKernel(null); // kernel shut down / no kernel
    expect(p.button().isHidden).toBe(true);
  });

  it('waits for the kernelspecs, and lets go of its panel when disposed', () => {
    const specs = fakeSpecs();
    const loaded = specs.specs;
    specs.specs = null;
    const ext = new KernelTerminalButton(() => undefined, specs);
    const p = fakePanel({ id: 'k', name: 'ptcuda-gpu' });
    const handle = ext.createNew(p.panel);
    expect(p.button().isHidden).toBe(true);
    specs.specs = loaded;
    specs.specsChanged.emit(undefined);
    expect(p.button().isHidden).toBe(false);
    handle.dispose();
    expect(p.button().isDisposed).toBe(true);
    p.setKernel({ id: 'k2', name: 'python3' }); // no longer followed: nothing throws
  });

  it('tells our kernelspecs from others', () => {
    const specs = fakeSpecs();
    expect(isContainerKernelSpec('ptcuda-gpu', specs)).toBe(true);
    expect(isContainerKernelSpec('python3', specs)).toBe(false);
    expect(isContainerKernelSpec('missing', specs)).toBe(false);
    expect(isContainerKernelSpec(undefined, specs)).toBe(false);
    expect(isContainerKernelSpec('ptcuda-gpu', null)).toBe(false);
  });
});
