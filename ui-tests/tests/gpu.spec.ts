/**
 * Against a server with two (fake) GPUs and the real Docker engine: the panel, an image health
 * check, a container kernel (status bar, kernel health check), export to train.py, a job run to
 * completion, a job cancelled.
 */
import { expect, test } from '@jupyterlab/galata';

import { jobJSON, notebook, openNotebook, openPanel, screenshotPath, waitForIdle } from './helpers';

const IMAGE = process.env.JUPYTER_PTCUDA_TEST_IMAGE || 'jupyter-ptcuda-test:cpu';
const KERNEL = process.env.PTCUDA_UI_KERNEL || 'ptcuda-test';
const KERNEL_ALL = process.env.PTCUDA_UI_KERNEL_ALL || 'ptcuda-test-all-gpus';

test.describe('GPU panel', () => {
  test('shows both GPUs with their charts, values and holders', async ({ page }) => {
    const panel = await openPanel(page);
    const cards = panel.locator('.jp-ptcuda-GpuCard');
    await expect(cards).toHaveCount(2);
    await expect(cards.nth(0)).toContainText('GPU 0');
    await expect(cards.nth(1)).toContainText('GPU 1');
    await expect(cards.nth(0)).toContainText('NVIDIA H100');
    await expect(panel.locator('.jp-ptcuda-Driver')).toContainText('Driver 550');
    // The charts fill as the panel polls; each card has a utilisation and a memory chart.
    const util = cards.nth(0).locator('.jp-ptcuda-Sparkline-util');
    await expect
      .poll(async () => Number(await util.getAttribute('data-points')), { timeout: 30000 })
      .toBeGreaterThanOrEqual(3);
    await expect(util.locator('path.jp-ptcuda-Sparkline-line')).toHaveCount(1);
    await expect(cards.nth(1).locator('.jp-ptcuda-Sparkline-mem path.jp-ptcuda-Sparkline-line')).toHaveCount(1);
    await expect(cards.nth(0).locator('.jp-ptcuda-GpuCard-stats')).toContainText('°C');
    await expect(cards.nth(0).locator('.jp-ptcuda-GpuCard-stats')).toContainText('W');
    await expect(cards.nth(0).locator('.jp-ptcuda-Holders')).toBeVisible();
    await panel.screenshot({ path: screenshotPath('gpu-panel') });
  });

  test('runs a health check of an image; the failure stands out with its fix', async ({ page }) => {
    const panel = await openPanel(page);
    await panel.getByLabel('Image to check').fill(IMAGE);
    // asks for a GPU (no GPU asked for is not a failure): CUDA unavailable then fails the check
    await panel.getByLabel('GPUs for the check').selectOption('1');
    const results = panel.locator('.jp-ptcuda-HealthResult');
    const before = await results.count();
    await panel.getByRole('button', { name: 'Check image' }).click();
    await expect(results).toHaveCount(before + 1);
    const result = results.first(); // newest first
    await expect(result).not.toHaveAttribute('data-state', 'running', { timeout: 180000 });
    await expect(result.locator('.jp-ptcuda-error')).toHaveCount(0); // it ran
    await expect(result).toHaveAttribute('data-summary', 'fail');
    // CPU-only torch: CUDA unavailable is a failure, listed first, with the remediation.
    const first = result.locator('.jp-ptcuda-Check').first();
    await expect(first).toHaveAttribute('data-status', 'fail');
    await expect(first).toContainText('CUDA available to PyTorch');
    await expect(first.locator('.jp-ptcuda-Check-remediation')).toContainText('CUDA build of PyTorch');
    await expect(result.locator('.jp-ptcuda-Badge-fail')).toHaveText('FAIL');
    await result.scrollIntoViewIfNeeded();
    await panel.screenshot({ path: screenshotPath('health-image') });
  });
});

test.describe('container kernel', () => {
  test('status bar shows its GPUs; the health check runs in the kernel', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'kernel.ipynb',
      notebook([{ source: 'import torch\ntorch.__version__' }], { name: KERNEL, display_name: KERNEL })
    );
    await waitForIdle(page);
    // The test kernel has no GPU: the status-bar item says so.
    await expect(page.locator('#jp-main-statusbar .jp-ptcuda-StatusItem')).toHaveText('GPU: none', {
      timeout: 30000
    });
    const panel = await openPanel(page);
    const button = panel.getByRole('button', { name: 'Run health check' });
    await expect(button).toBeEnabled();
    const results = panel.locator('.jp-ptcuda-HealthResult');
    const before = await results.count();
    await button.click();
    await expect(results).toHaveCount(before + 1);
    const result = results.first(); // newest first
    await expect(result).toContainText('kernel of');
    await expect(result).not.toHaveAttribute('data-state', 'running', { timeout: 180000 });
    await expect(result.locator('.jp-ptcuda-error')).toHaveCount(0);
    // a kernel started without GPUs, by choice: not a red FAIL, and the reason says so
    await expect(result.locator('.jp-ptcuda-HealthResult-cuda')).toContainText('No GPU: no GPU requested');
    await expect(result.locator('.jp-ptcuda-Check[data-status="fail"]')).toHaveCount(0);
    await page.screenshot({ path: screenshotPath('kernel-health-and-status-bar') });
  });
});

test.describe('container kernel with gpus: "all"', () => {
  test('the status bar shows every GPU the kernel has', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'all-gpus.ipynb',
      notebook([{ source: "import os\nos.environ.get('NVIDIA_VISIBLE_DEVICES')" }], {
        name: KERNEL_ALL,
        display_name: KERNEL_ALL
      })
    );
    await waitForIdle(page);
    // The server answers the kernel's devices (not ["all"]): both fake GPUs, in the status bar.
    const item = page.locator('#jp-main-statusbar .jp-ptcuda-StatusItem');
    await expect(item).toContainText('GPU 0,1', { timeout: 30000 });
    await expect(item).not.toContainText('none');
    await page.screenshot({ path: screenshotPath('status-bar-all-gpus') });
  });
});

test.describe('export and jobs', () => {
  test('exports a notebook to train.py and runs it as a job to completion', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'train.ipynb',
      notebook([
        { source: "epochs = 2\nlr = 0.01\nname = 'demo'", tags: ['parameters'] },
        { source: "import time\nfor e in range(epochs):\n    print('epoch', e, lr, name, flush=True)\n    time.sleep(0.5)" },
        { source: '%time total = sum(range(10))' }
      ])
    );
    // From the notebook toolbar.
    await page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="ptcuda-export"]').click();
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('Export of');
    await expect(dialog.locator('.jp-ptcuda-Export-saved')).toContainText('train.train.py');
    await expect(dialog.locator('.jp-ptcuda-Export-report')).toContainText('flag --epochs (int)');
    await expect(dialog.locator('.jp-ptcuda-Export-script')).toContainText('_parse_params');
    await dialog.locator('.jp-Dialog-content').screenshot({ path: screenshotPath('export-dialog') });
    expect(await page.contents.fileExists(`${tmpPath}/train.train.py`)).toBe(true);

    await dialog.getByRole('button', { name: 'Run as training job…' }).click();
    const form = page.locator('.jp-Dialog .jp-ptcuda-JobForm');
    await expect(form).toBeVisible();
    await expect(form.locator('input[data-param="epochs"]')).toHaveValue('2');
    await form.locator('input[data-param="epochs"]').fill('3');
    await form.locator('input[data-param="name"]').fill('ui-test');
    await form.locator('input[name="image"]').fill(IMAGE);
    await form.locator('input[name="gpus"]').fill('0');
    await page.locator('.jp-Dialog').screenshot({ path: screenshotPath('job-form') });
    await page.locator('.jp-Dialog').getByRole('button', { name: 'Run job' }).click();

    const view = page.locator('#jupyter-ptcuda-jobs');
    await expect(view).toBeVisible();
    const log = view.locator('.jp-ptcuda-JobLog-text');
    await expect(log).toContainText('epoch 0 0.01 ui-test', { timeout: 120000 });
    const jobId = await view.locator('.jp-ptcuda-JobLog').getAttribute('data-job-id');
    await expect(view.locator('.jp-ptcuda-JobLog')).toContainText('log complete', { timeout: 120000 });
    const job = await jobJSON(page, jobId);
    expect(job.state, `job ${jobId} ended ${job.state}: ${job.reason}`).toBe('completed');
    await expect(log).toContainText('epoch 2 0.01 ui-test');
    await expect(log).toContainText('Wall time');
    await expect(view.locator('.jp-ptcuda-JobLog .jp-ptcuda-Badge')).toHaveText('completed', { timeout: 60000 });
    const row = view.locator('.jp-ptcuda-JobRow').first();
    await expect(row).toHaveAttribute('data-state', 'completed', { timeout: 30000 });
    await expect(row.locator('.jp-ptcuda-JobRow-exit')).toHaveText('0');
    await expect(view.locator('.jp-ptcuda-JobLog')).toContainText('exit code 0');
    await view.screenshot({ path: screenshotPath('job-completed') });
  });

  test('reruns a finished job from the Jobs view: same parameters and image digest', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'again.ipynb',
      notebook([{ source: 'lr = 0.01', tags: ['parameters'] }, { source: "print('trained with lr', lr, flush=True)" }])
    );
    await page.menu.clickMenuItem('Run>Run as Training Job…');
    const form = page.locator('.jp-Dialog .jp-ptcuda-JobForm');
    await expect(form).toBeVisible();
    await form.locator('input[data-param="lr"]').fill('0.25');
    await form.locator('input[name="image"]').fill(IMAGE);
    await form.locator('input[name="gpus"]').fill('0');
    await page.locator('.jp-Dialog').getByRole('button', { name: 'Run job' }).click();

    const view = page.locator('#jupyter-ptcuda-jobs');
    await expect(view.locator('.jp-ptcuda-JobLog')).toBeVisible({ timeout: 60000 });
    const firstId = await view.locator('.jp-ptcuda-JobLog').getAttribute('data-job-id');
    const first = view.locator(`.jp-ptcuda-JobRow[data-job-id="${firstId}"]`);
    await expect(first).toHaveAttribute('data-state', 'completed', { timeout: 120000 });
    await expect(first.getByRole('button', { name: 'Cancel' })).toHaveCount(0);

    const rerun = first.getByRole('button', { name: 'Rerun' });
    await expect(rerun, 'on screen in the narrow Jobs view').toBeInViewport({ ratio: 1 });
    await rerun.click();
    // the new job is selected (its log shown) and listed as a rerun of the first
    await expect(view.locator('.jp-ptcuda-JobLog')).not.toHaveAttribute('data-job-id', firstId ?? '', { timeout: 30000 });
    const againId = await view.locator('.jp-ptcuda-JobLog').getAttribute('data-job-id');
    const again = view.locator(`.jp-ptcuda-JobRow[data-job-id="${againId}"]`);
    await expect(again.locator('.jp-ptcuda-JobRow-rerunOf')).toHaveText(`(rerun of ${firstId})`);
    await expect(again).toHaveAttribute('data-state', 'completed', { timeout: 120000 });
    await expect(view.locator('.jp-ptcuda-JobLog-text')).toContainText('trained with lr 0.25');
    await expect(again.locator('.jp-ptcuda-JobRow-params')).toContainText('lr=0.25');
    const [a, b] = [await jobJSON(page, firstId), await jobJSON(page, againId)];
    expect(b.image_digest).toBe(a.image_digest);
    expect(b.meta.rerun_of).toBe(firstId);
    await view.screenshot({ path: screenshotPath('job-rerun') });
  });

  test('cancels a running job', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'sleeper.ipynb',
      notebook([
        { source: 'seconds = 600', tags: ['parameters'] },
        { source: "import time\nprint('sleeping', seconds, flush=True)\ntime.sleep(seconds)\nprint('woke up')" }
      ])
    );
    // From the main menu this time.
    await page.menu.clickMenuItem('Run>Run as Training Job…');
    const form = page.locator('.jp-Dialog .jp-ptcuda-JobForm');
    await expect(form).toBeVisible();
    await form.locator('input[name="image"]').fill(IMAGE);
    await form.locator('input[name="gpus"]').fill('0');
    await page.locator('.jp-Dialog').getByRole('button', { name: 'Run job' }).click();

    const view = page.locator('#jupyter-ptcuda-jobs');
    await expect(view.locator('.jp-ptcuda-JobLog-text')).toContainText('sleeping 600', { timeout: 120000 });
    const jobId = await view.locator('.jp-ptcuda-JobLog').getAttribute('data-job-id');
    const row = view.locator(`.jp-ptcuda-JobRow[data-job-id="${jobId}"]`);
    await expect(row).toHaveAttribute('data-state', 'running', { timeout: 30000 });
    await row.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('.jp-Dialog').getByRole('button', { name: 'Cancel job' }).click(); // it asks first
    await expect(row).toHaveAttribute('data-state', 'cancelled', { timeout: 90000 });
    await expect(row.getByRole('button', { name: 'Cancel' })).toHaveCount(0);
    await expect(view.locator('.jp-ptcuda-JobLog-text')).not.toContainText('woke up');
    await view.screenshot({ path: screenshotPath('job-cancelled') });
  });
});
