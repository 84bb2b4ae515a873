/**
 * What a new user hit in their first hour (issue 26), in a real browser on a laptop-sized window
 * (1280×800) with the GPU panel open: a running job's Cancel and Terminal stay on screen in a narrow
 * Jobs view; cancelling asks first and says what ended the job; a kernel started without GPUs is not
 * a red FAIL of "CUDA available" in its health check.
 */
import { expect, test } from '@jupyterlab/galata';

import { execute, notebook, openNotebook, openPanel, screenshotPath, waitForIdle } from './helpers';

const IMAGE = process.env.JUPYTER_PTCUDA_TEST_IMAGE || 'jupyter-ptcuda-test:cpu';
const KERNEL = process.env.PTCUDA_UI_KERNEL || 'ptcuda-test';

test.use({ viewport: { width: 1280, height: 800 } });

test.describe('first hour at 1280×800', () => {
  test('a running job’s Terminal and Cancel are on screen in a narrow Jobs view', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'sleeper.ipynb',
      notebook([
        { source: 'seconds = 600', tags: ['parameters'] },
        { source: "import time\nprint('sleeping', seconds, flush=True)\ntime.sleep(seconds)\nprint('woke up')" }
      ])
    );
    await openPanel(page);
    await page.menu.clickMenuItem('Run>Run as Training Job…');
    const form = page.locator('.jp-Dialog .jp-ptcuda-JobForm');
    await expect(form).toBeVisible();
    await form.locator('input[name="image"]').fill(IMAGE);
    await form.locator('input[name="gpus"]').fill('0');
    await page.locator('.jp-Dialog').getByRole('button', { name: 'Run job' }).click();

    const view = page.locator('#jupyter-ptcuda-jobs');
    await expect(view.locator('.jp-ptcuda-JobLog-text')).toContainText('sleeping 600', { timeout: 120000 });
    await expect(page.locator('#jupyter-ptcuda-panel')).toBeVisible(); // the GPU panel is still open
    const jobId = await view.locator('.jp-ptcuda-JobLog').getAttribute('data-job-id');
    const row = view.locator(`.jp-ptcuda-JobRow[data-job-id="${jobId}"]`);
    await expect(row).toHaveAttribute('data-state', 'running', { timeout: 30000 });

    const box = (await view.boundingBox())!;
    expect(box.width, 'the Jobs view is a narrow split beside the notebook').toBeLessThan(700);
    for (const name of ['Terminal', 'Cancel']) {
      const button = row.getByRole('button', { name });
      await expect(button).toBeVisible();
      await expect(button).toBeInViewport({ ratio: 1 });
      const b = (await button.boundingBox())!;
      expect(b.x, `${name} starts inside the Jobs view`).toBeGreaterThanOrEqual(box.x);
      expect(b.x + b.width, `${name} ends inside the Jobs view (at x ≤ ${box.x + box.width})`).toBeLessThanOrEqual(
        box.x + box.width
      );
    }
    await page.screenshot({ path: screenshotPath('jobs-narrow-1280') });

    // Cancel asks first; "Keep running" keeps it running.
    await row.getByRole('button', { name: 'Cancel' }).click();
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('SIGTERM');
    await dialog.getByRole('button', { name: 'Keep running' }).click();
    await expect(row).toHaveAttribute('data-state', 'running');
    await row.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('.jp-Dialog').getByRole('button', { name: 'Cancel job' }).click();
    await expect(row).toHaveAttribute('data-state', 'cancelled', { timeout: 90000 });
    await expect(row.locator('.jp-ptcuda-JobRow-exit')).toContainText('(SIGTERM, by you)');
    await expect(view.locator('.jp-ptcuda-JobLog-text')).not.toContainText('woke up');

    // Closing and reopening the Jobs view does not split the right-hand area again.
    await page.evaluate(() => {
      for (const w of (window as any).jupyterapp.shell.widgets('main')) {
        if (w.id === 'jupyter-ptcuda-jobs') {
          w.close();
        }
      }
    });
    await expect(view).toHaveCount(0);
    await execute(page, 'jupyter-ptcuda:open-jobs');
    await expect(page.locator('#jupyter-ptcuda-jobs')).toBeVisible();
    const again = (await page.locator('#jupyter-ptcuda-jobs').boundingBox())!;
    expect(again.width).toBeGreaterThanOrEqual(box.width - 2);
  });

  test('a kernel without GPUs: its health check says "No GPU", not a red FAIL', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'cpu.ipynb',
      notebook([{ source: '1 + 1' }], { name: KERNEL, display_name: 'PyTorch (test)' })
    );
    await waitForIdle(page);
    const panel = await openPanel(page);
    // The image field proposes the kernel's image.
    await expect(panel.locator('.jp-ptcuda-Health-image')).toHaveValue(IMAGE);
    await panel.locator('.jp-ptcuda-Health-kernel').click();
    const result = panel.locator('.jp-ptcuda-HealthResult').first();
    await expect(result).toHaveAttribute('data-state', 'done', { timeout: 120000 });
    await expect(result.locator('.jp-ptcuda-HealthResult-cuda')).toContainText('No GPU: no GPU requested');
    await expect(result.locator('.jp-ptcuda-Check[data-status="fail"]')).toHaveCount(0);
    await expect(result).not.toHaveAttribute('data-summary', 'fail');
    await panel.screenshot({ path: screenshotPath('health-no-gpu-by-choice') });
    // Results can be cleared, and stay cleared after a reload.
    await panel.getByRole('button', { name: 'Clear results' }).click();
    await expect(panel.locator('.jp-ptcuda-HealthResult')).toHaveCount(0);
    await page.reload({ waitForIsReady: false }); // the restored notebook, not a launcher
    const reloaded = await openPanel(page);
    await expect(reloaded.locator('.jp-ptcuda-Health[data-loaded="true"]')).toBeVisible();
    await expect(reloaded.locator('.jp-ptcuda-HealthResult')).toHaveCount(0);
  });
});

test.describe('help', () => {
  test('the Help menu and the GPU panel open jupyter-ptcuda’s documentation', async ({ page }) => {
    await page.menu.clickMenuItem('Help>jupyter-ptcuda Help');
    const tab = page.locator('#jupyter-ptcuda-docs');
    await expect(tab).toBeVisible();
    const doc = page.frameLocator('#jupyter-ptcuda-docs iframe');
    await expect(doc.locator('h1').first()).toHaveText('jupyter-ptcuda');
    await expect(doc.locator('body')).toContainText('scripts/quickstart');
    await page.screenshot({ path: screenshotPath('help-docs') });
    // the panel's link activates the same tab
    await page.evaluate(() => (window as any).jupyterapp.shell.activateById('jupyter-ptcuda-panel'));
    const panel = await openPanel(page);
    await panel.getByRole('link', { name: 'jupyter-ptcuda help' }).click();
    await expect(tab).toBeVisible();
    await expect(page.locator('#jupyter-ptcuda-docs')).toHaveCount(1);
  });
});

test.describe('kernel-start notices', () => {
  test('a kernel whose image is missing: the notice says it could not be pulled, and how to build it', async ({
    page,
    tmpPath
  }) => {
    const kernel = process.env.PTCUDA_UI_KERNEL_MISSING || 'ptcuda-test-missing-image';
    const nbPath = `${tmpPath}/missing.ipynb`;
    await page.contents.uploadContent(
      notebook([{ source: '1 + 1' }], { name: kernel, display_name: 'PyTorch (missing image, test)' }),
      'text',
      nbPath
    );
    await page.notebook.openByPath(nbPath);
    // the pop-up shows the first ~140 characters: what to do comes first
    const toast = page.locator('.Toastify__toast').filter({ hasText: "missing.ipynb's kernel did not start" });
    await expect(toast).toBeVisible({ timeout: 60000 });
    await expect(toast).toContainText('`jupyter ptcuda image build --tag 127.0.0.1:9/jupyter-ptcuda/not-built:ui-test` builds');
    await page.screenshot({ path: screenshotPath('notice-missing-image') });
  });
});
