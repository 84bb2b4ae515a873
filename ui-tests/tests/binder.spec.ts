/**
 * As on mybinder.org: no NVIDIA driver, no Docker engine. Every part says so plainly; the
 * export still works.
 */
import { expect, test } from '@jupyterlab/galata';

import { notebook, openNotebook, openPanel, screenshotPath } from './helpers';

test('the panel says there is no NVIDIA driver and no Docker engine', async ({ page }) => {
  const panel = await openPanel(page);
  const notice = panel.locator('.jp-ptcuda-Status-unavailable');
  await expect(notice).toContainText('No NVIDIA driver on this host');
  await expect(notice).toContainText('libnvidia-ml.so.1');
  await expect(panel.locator('.jp-ptcuda-GpuCard')).toHaveCount(0);

  await panel.getByLabel('Image to check').fill('jupyter-ptcuda-test:cpu');
  const results = panel.locator('.jp-ptcuda-HealthResult');
  const before = await results.count();
  await panel.getByRole('button', { name: 'Check image' }).click();
  await expect(results).toHaveCount(before + 1);
  const result = results.first();
  await expect(result).toHaveAttribute('data-state', 'error', { timeout: 30000 });
  await expect(result.locator('.jp-ptcuda-error')).toContainText('Docker engine not available');
  await expect(result.locator('.jp-ptcuda-error')).toContainText('the Docker engine does not answer');
  await panel.screenshot({ path: screenshotPath('binder-panel') });
});

test('export works; running a job says the Docker engine is not available', async ({ page, tmpPath }) => {
  await openNotebook(
    page,
    tmpPath,
    'train.ipynb',
    notebook([{ source: 'epochs = 1', tags: ['parameters'] }, { source: "print('epochs', epochs)" }])
  );
  await page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="ptcuda-export"]').click();
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog.locator('.jp-ptcuda-Export-saved')).toContainText('train.train.py');
  await dialog.getByRole('button', { name: 'Run as training job…' }).click();
  await expect(page.locator('.jp-Dialog .jp-ptcuda-JobForm')).toBeVisible();
  await page.locator('.jp-Dialog').getByRole('button', { name: 'Run job' }).click();
  const error = page.locator('.jp-Dialog');
  await expect(error).toContainText('Docker engine not available');
  await expect(error).toContainText('the Docker engine does not answer');
  await error.getByRole('button', { name: /Dismiss|OK|Close/ }).first().click();
  await expect(page.locator('#jupyter-ptcuda-jobs .jp-ptcuda-error')).toContainText('Docker engine not available');
  await page.screenshot({ path: screenshotPath('binder-job-refused') });
});
