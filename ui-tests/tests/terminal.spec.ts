/**
 * "Open Terminal in Kernel Container" (gpu server: real Docker engine, stand-in NVIDIA hook): the
 * shell runs inside the notebook's kernel container, as the kernel's user, in the notebook's folder,
 * with the kernel's GPUs. Run by the gpu project (its testMatch must list this file).
 */
import { expect, test } from '@jupyterlab/galata';

import { execute, notebook, openNotebook, screenshotPath, waitForIdle } from './helpers';

const KERNEL_ALL = process.env.PTCUDA_UI_KERNEL_ALL || 'ptcuda-test-all-gpus';
const PROBE =
  "import os, socket; print(f\"uid={os.getuid()} host={socket.gethostname()} dev={os.environ.get('NVIDIA_VISIBLE_DEVICES')} dir={os.getcwd()}\")";
/** What the terminal's shell wrote, read by the kernel: the same container's /tmp. */
const READ_BACK =
  "import os; p = '/tmp/ptcuda-terminal.txt'; print(open(p).read().strip() if os.path.exists(p) else 'not yet')";

/** The last line a cell printed (a kernel may print a notice first). */
async function lastLine(page: any, cell: number): Promise<string> {
  const text = ((await page.notebook.getCellTextOutput(cell)) ?? []).join('').trim();
  return text.split('\n').pop() ?? '';
}

// galata answers GET api/terminals with only the terminals it saw created through api/terminals;
// ours is created by jupyter-ptcuda/terminals: the real list, please (the test closes it itself).
test.use({ terminals: null as any });

/** The name of each terminal jupyter-ptcuda creates on this page (to close it at the end). */
function trackCreated(page: any): string[] {
  const created: string[] = [];
  page.on('response', async (response: any) => {
    if (response.url().includes('/jupyter-ptcuda/terminals') && response.request().method() === 'POST') {
      created.push((await response.json()).name);
    }
  });
  return created;
}

/** Open a container-kernel notebook, run the probe: what the kernel says about itself. */
async function kernelNotebook(page: any, tmpPath: string, name: string, readBack: string): Promise<string> {
  await openNotebook(
    page,
    tmpPath,
    name,
    notebook([{ source: PROBE }, { source: readBack }], { name: KERNEL_ALL, display_name: KERNEL_ALL })
  );
  await waitForIdle(page);
  await page.notebook.runCell(0);
  await waitForIdle(page);
  const kernelSays = await lastLine(page, 0);
  expect(kernelSays).toMatch(/^uid=\d+ host=[0-9a-f]{12} dev=\S+ dir=\//); // the container's, with its GPUs
  return kernelSays;
}

/** In the terminal just opened, the shell writes what it sees to the container's /tmp (the terminal
 * may draw on a canvas) and the kernel reads it back: the same as the kernel says about itself. */
async function shellSeesTheKernel(page: any, name: string, file: string, kernelSays: string, shot: string) {
  const terminal = page.locator('.jp-Terminal').last();
  await expect(terminal).toBeVisible({ timeout: 60000 });
  await terminal.click();
  await page.keyboard.type(`echo "uid=$(id -u) host=$(hostname) dev=$NVIDIA_VISIBLE_DEVICES dir=$PWD" > ${file}\n`);
  await page.screenshot({ path: screenshotPath(shot) });
  // the notebook's own tab (the terminal's, "Terminal: kernel of <name>", has its name too)
  await page
    .locator('.lm-DockPanel-tabBar .lm-TabBar-tabLabel')
    .filter({ hasText: new RegExp(`^${name.replace('.', '\\.')}$`) })
    .click();
  await expect
    .poll(
      async () => {
        await page.notebook.runCell(1);
        await waitForIdle(page);
        return lastLine(page, 1);
      },
      { timeout: 60000 }
    )
    .toBe(kernelSays); // same uid, hostname, GPUs and folder as the kernel: a shell in its container
}

test('opens a terminal in the kernel container', async ({ page, tmpPath }) => {
  const created = trackCreated(page);
  const kernelSays = await kernelNotebook(page, tmpPath, 'terminal.ipynb', READ_BACK);
  await execute(page, 'jupyter-ptcuda:open-kernel-terminal');
  await shellSeesTheKernel(page, 'terminal.ipynb', '/tmp/ptcuda-terminal.txt', kernelSays, 'terminal-in-kernel-container');
  expect(created).toHaveLength(1);
  // the tab says where the shell runs
  await expect(page.locator('.lm-TabBar-tab', { hasText: 'Terminal: kernel of terminal.ipynb' })).toHaveCount(1);
  // the kernel shut down ends its terminal, and the user is told why the tab went away
  await page.menu.clickMenuItem('Kernel>Shut Down Kernel');
  await expect(page.locator('.Toastify__toast').filter({ hasText: 'closed: its kernel ended' })).toBeVisible({
    timeout: 60000
  });
  await expect(page.locator('.lm-TabBar-tab', { hasText: 'Terminal: kernel of terminal.ipynb' })).toHaveCount(0);
});

test('the notebook toolbar button opens it, for container kernels only', async ({ page, tmpPath }) => {
  const button = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-ptcuda-KernelTerminalButton');
  await openNotebook(page, tmpPath, 'plain.ipynb', notebook([{ source: '1 + 1' }]));
  await waitForIdle(page);
  await expect(button).toHaveCount(1);
  await expect(button).toBeHidden(); // a python3 kernel: not ours, no button
  await page.notebook.close();

  const created = trackCreated(page);
  const readBack = READ_BACK.replace('ptcuda-terminal.txt', 'ptcuda-toolbar.txt');
  const kernelSays = await kernelNotebook(page, tmpPath, 'toolbar.ipynb', readBack);
  await expect(button).toBeVisible();
  await button.click();
  await shellSeesTheKernel(page, 'toolbar.ipynb', '/tmp/ptcuda-toolbar.txt', kernelSays, 'terminal-from-toolbar');
  expect(created).toHaveLength(1);
  expect((await page.request.delete(`/api/terminals/${created[0]}`)).status()).toBe(204);
});
