/**
 * "Open Terminal in Kernel Container" (gpu server: real Docker engine, stand-in NVIDIA hook): the
 * shell runs inside the notebook's kernel container, as the kernel's user, in the notebook's folder,
 * with the kernel's GPUs. Run by the gpu project (its testMatch must list this file).
 */
import { expect, test } from '@jupyterlab/galata';

import { execute, notebook, openNotebook, screenshotPath, waitForIdle } from './helpers';

const KERNEL_ALL = process.env.PTCUDA_UI_KERNEL_ALL || 'ptcuda-test-all-gpus';
const PROBE =
  "import os, socket; print(f\"uid={os.getuid()} host={socket.gethostname()} dev={os.environ.get('NVIDIA_VISIBLE_DEVICES')}\")";

test('opens a terminal in the kernel container', async ({ page, tmpPath }) => {
  await openNotebook(
    page,
    tmpPath,
    'terminal.ipynb',
    notebook([{ source: PROBE }], { name: KERNEL_ALL, display_name: KERNEL_ALL })
  );
  await waitForIdle(page);
  await page.notebook.runCell(0);
  await waitForIdle(page);
  const kernelSays = ((await page.notebook.getCellTextOutput(0)) ?? []).join('').trim();
  expect(kernelSays).toMatch(/^uid=\d+ host=[0-9a-f]{12} dev=0,1$/); // the container's, with both GPUs

  await execute(page, 'jupyter-ptcuda:open-kernel-terminal');
  const terminal = page.locator('.jp-Terminal').last();
  await expect(terminal).toBeVisible({ timeout: 60000 });
  await terminal.click();
  // The terminal may draw on a canvas: the shell writes what it sees next to the notebook instead.
  await page.keyboard.type('echo "uid=$(id -u) host=$(hostname) dev=$NVIDIA_VISIBLE_DEVICES" > terminal.txt\n');
  await expect
    .poll(
      async () => {
        const reply = await page.request.get(`/api/contents/${tmpPath}/terminal.txt?content=1`);
        return reply.ok() ? String((await reply.json()).content).trim() : '';
      },
      { timeout: 30000 }
    )
    .toBe(kernelSays); // same uid, same container, same GPUs as the kernel; in the notebook's folder
  await page.screenshot({ path: screenshotPath('terminal-in-kernel-container') });
});
