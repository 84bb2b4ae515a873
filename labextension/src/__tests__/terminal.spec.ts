import { showErrorMessage as shown } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';

import { MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  label,
  openContainerTerminal,
  TERMINAL_OPEN,
  terminalLabel
} from '../terminal';
import { FakeServer } from './fakeserver';

jest.mock('@jupyterlab/apputils', () => ({
  showErrorMessage: jest.fn(async () => undefined)
}));
const showErrorMessage = shown as unknown as jest.Mock;

const reply = {
  name: '3',
  kind: 'kernel',
  id: 'k-1234567890',
  container_id: 'abc123def456',
  user: '1000:100',
  workdir: '/home/me/nb'
};

describe('openContainerTerminal', () => {
  let server: FakeServer;
  let opened: unknown[];
  let commands: CommandRegistry;
  beforeEach(() => {
    server = new FakeServer();
    opened = [];
    commands = new CommandRegistry();
    commands.addCommand(TERMINAL_OPEN, {
      execute: args => void opened.push(args)
    });
    showErrorMessage.mockClear();
  });
  afterEach(() => server.restore());

  it('sends only the kernel id and opens the terminal the server made, by name', async () => {
    server.on('POST', 'terminals', { status: 201, body: reply });
    server.on('GET', '/api/terminals', { body: [{ name: '3' }] });
    const term = await openContainerTerminal(
      commands,
      { kernel_id: 'k-1234567890' },
      server.settings
    );
    expect(term?.name).toBe('3');
    expect(server.requests.map(r => [r.method, r.body])).toEqual([
      ['POST', { kernel_id: 'k-1234567890' }],
      ['GET', undefined]
    ]);
    expect(opened).toEqual([{ name: '3' }]);
    expect(terminalLabel(reply as any)).toBe('kernel k-123456 (abc123def456)');
  });

  it('shows the server’s message and opens nothing when the kernel is refused', async () => {
    server.on('POST', 'terminals', {
      status: 404,
      body: { message: "no kernel 'x' on this server", reason: 'NotFound' }
    });
    expect(
      await openContainerTerminal(commands, { job_id: 'x' }, server.settings)
    ).toBeNull();
    expect(opened).toEqual([]);
    expect(showErrorMessage.mock.calls[0][1]).toContain(
      "no kernel 'x' on this server"
    );
  });

  it('never opens a terminal the server does not list (terminal:open would start a host shell)', async () => {
    server.on('POST', 'terminals', { status: 201, body: reply });
    server.on('GET', '/api/terminals', { body: [{ name: '1' }] });
    expect(
      await openContainerTerminal(commands, { kernel_id: 'k' }, server.settings)
    ).toBeNull();
    expect(opened).toEqual([]);
    expect(showErrorMessage.mock.calls[0][1]).toContain(
      'ended before it opened'
    );
  });

  it('says so when JupyterLab has no terminal extension', async () => {
    const bare = new CommandRegistry();
    expect(
      await openContainerTerminal(bare, { kernel_id: 'k' }, server.settings)
    ).toBeNull();
    expect(server.requests).toEqual([]);
    expect(showErrorMessage.mock.calls[0][1]).toContain('jupyter ptcuda shell');
  });
});

describe('the terminal tab', () => {
  it('is named after where the shell runs, keeps that name, and says when its kernel ended it', () => {
    const said: string[] = [];
    const ended = new Widget();
    label(ended, reply as any, 'kernel of train.ipynb', (m: string) =>
      said.push(m)
    );
    expect(ended.title.label).toBe('Terminal: kernel of train.ipynb');
    ended.title.label = 'ptcuda@abc: /home/me/nb'; // the shell sets a window title
    expect(ended.title.label).toBe('Terminal: kernel of train.ipynb');
    ended.dispose(); // the server closed it: the kernel was shut down
    expect(said).toHaveLength(1);
    expect(said[0]).toContain(
      'The terminal in kernel of train.ipynb closed: its kernel ended'
    );

    const closed = new Widget();
    label(closed, reply as any, undefined, (m: string) => said.push(m));
    expect(closed.title.label).toBe('Terminal: kernel k-123456 (abc123def456)');
    MessageLoop.sendMessage(closed, Widget.Msg.CloseRequest); // the user closed the tab
    closed.dispose();
    expect(said).toHaveLength(1);
  });
});
