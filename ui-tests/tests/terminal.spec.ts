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

test('opens a terminal in the kernel container', async ({ page, tmpPath }) => {
  let created = '';
  page.on('response', async response => {
    if (response.url().includes('/jupyter-ptcuda/terminals') && response.request().method() === 'POST') {
      created = (await response.json()).name;
    }
  });
  await openNotebook(
    page,
    tmpPath,
    'terminal.ipynb',
    notebook([{ source: PROBE }, { source: READ_BACK }], { name: KERNEL_ALL, display_name: KERNEL_ALL })
  );
  await waitForIdle(page);
  await page.notebook.runCell(0);
  await waitForIdle(page);
  const kernelSays = await lastLine(page, 0);
  expect(kernelSays).toMatch(/^uid=\d+ host=[0-9a-f]{12} dev=\S+ dir=\//); // the container's, with its GPUs

  await execute(page, 'jupyter-ptcuda:open-kernel-terminal');
  const terminal = page.locator('.jp-Terminal').last();
  await expect(terminal).toBeVisible({ timeout: 60000 });
  await terminal.click();
  // The terminal may draw on a canvas: the shell writes what it sees to the container's /tmp, and
  // the kernel reads it back.
  await page.keyboard.type(
    'echo "uid=$(id -u) host=$(hostname) dev=$NVIDIA_VISIBLE_DEVICES dir=$PWD" > /tmp/ptcuda-terminal.txt\n'
  );
  await page.screenshot({ path: screenshotPath('terminal-in-kernel-container') });
  await page.notebook.activate('terminal.ipynb');
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
  expect(created).not.toBe('');
  expect((await page.request.delete(`/api/terminals/${created}`)).status()).toBe(204);
});
