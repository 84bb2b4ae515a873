/**
 * "Open Terminal in Kernel Container": a JupyterLab terminal whose shell runs inside a kernel's (or a
 * running job's) container, as its user, in its folder. The server builds the shell
 * (`POST jupyter-ptcuda/terminals`, only a kernel or job id is sent); JupyterLab's own terminal
 * (`terminal:open` with the terminal's name) shows it over the server's terminal websocket.
 */
import { Notification, showErrorMessage } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { CommandRegistry } from '@lumino/commands';
import { MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { errorMessage, postJSON } from './request';

/** The terminal command of JupyterLab's terminal extension (opens a terminal by name). */
export const TERMINAL_OPEN = 'terminal:open';

/** Which container: a kernel of this server, or a running job. */
export type ContainerTarget = { kernel_id: string } | { job_id: string };

/** The server's reply: the terminal's name and where its shell runs. */
export interface IContainerTerminal {
  name: string;
  kind: 'kernel' | 'job';
  id: string;
  container_id: string;
  user?: string;
  workdir?: string;
}

/**
 * Ask the server for a terminal in the target's container and open it in JupyterLab; the terminal,
 * or null after showing why not (no such kernel, terminals disabled, no terminal extension).
 */
export async function openContainerTerminal(
  commands: CommandRegistry,
  target: ContainerTarget,
  settings?: ServerConnection.ISettings,
  what?: string
): Promise<IContainerTerminal | null> {
  if (!commands.hasCommand(TERMINAL_OPEN)) {
    await showErrorMessage(
      'Cannot open a terminal',
      'JupyterLab’s terminal extension is disabled; run `jupyter ptcuda shell ID` instead.'
    );
    return null;
  }
  let terminal: IContainerTerminal;
  try {
    terminal = await postJSON<IContainerTerminal>(
      'terminals',
      target,
      settings
    );
  } catch (error) {
    await showErrorMessage(
      'Cannot open a terminal in the container',
      errorMessage(error)
    );
    return null;
  }
  // terminal:open starts a new *host* shell under that name when no such terminal runs: open only
  // one the server lists (it ends at once if its container went away meanwhile).
  if (!(await isRunning(terminal.name, settings))) {
    await showErrorMessage(
      'Cannot open a terminal in the container',
      `The terminal ended before it opened: is ${terminal.kind} ${terminal.id} still running?`
    );
    return null;
  }
  const widget = await commands.execute(TERMINAL_OPEN, { name: terminal.name });
  if (widget instanceof Widget) {
    label(widget, terminal, what);
  }
  return terminal;
}

/**
 * Name the tab after where the shell runs ("Terminal: kernel of train.ipynb"), keep that name (the shell
 * may set a window title), and say so when the terminal closes because its kernel or job ended — not
 * when the user closed it.
 */
export function label(
  widget: Widget,
  terminal: IContainerTerminal,
  what?: string,
  notify: (message: string) => void = message =>
    void Notification.info(message, { autoClose: 10000 })
): void {
  const where = what ?? terminalLabel(terminal);
  const text = `Terminal: ${where}`;
  const titles = [widget.title];
  const content = (widget as any).content;
  if (content instanceof Widget) {
    titles.push(content.title);
  }
  for (const title of titles) {
    title.label = text;
    title.caption = `A shell in the container ${terminal.container_id} of ${terminal.kind} ${terminal.id}`;
    title.changed.connect(() => {
      if (title.label !== text) {
        title.label = text;
      }
    });
  }
  let closedByUser = false;
  MessageLoop.installMessageHook(widget, (_, msg) => {
    if (msg.type === 'close-request') {
      closedByUser = true;
    }
    return true;
  });
  widget.disposed.connect(() => {
    if (!closedByUser) {
      notify(
        `The terminal in ${where} closed: its ${terminal.kind} ended (shut down, restarted in a new container, or finished).`
      );
    }
  });
}

/** Whether the server lists a terminal of this name (`GET api/terminals`). */
async function isRunning(
  name: string,
  settings?: ServerConnection.ISettings
): Promise<boolean> {
  const s = settings ?? ServerConnection.makeSettings();
  try {
    const reply = await ServerConnection.makeRequest(
      URLExt.join(s.baseUrl, 'api', 'terminals'),
      {},
      s
    );
    const models = reply.ok ? JSON.parse(await reply.text()) : [];
    return (
      Array.isArray(models) &&
      models.some((m: { name?: string }) => m.name === name)
    );
  } catch {
    return false;
  }
}

/** The terminal's label: where its shell runs. */
export function terminalLabel(terminal: IContainerTerminal): string {
  return `${terminal.kind} ${terminal.id.slice(0, 8)} (${terminal.container_id})`;
}
