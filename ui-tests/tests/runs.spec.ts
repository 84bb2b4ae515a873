/**
 * Jobs as MLflow runs in the Jobs view (issue 24), against the real server with MLflow tracking on
 * (an embedded SQLite store in .tmp/gpu/mlflow.db, jupyter_server_test_config.py) and a job in the
 * image with MLflow (`jupyter-ptcuda-test:mlflow`, the `serve` preset): the notebook logs a metric and
 * a PyTorch model; the Jobs view shows the -p value and the metric's last value, links to the run, and
 * "Register model" makes version 1 of the name typed.
 */
import { expect, test } from '@jupyterlab/galata';

import { jobJSON, notebook, openNotebook, screenshotPath } from './helpers';

const IMAGE = process.env.JUPYTER_PTCUDA_MLFLOW_TEST_IMAGE || 'jupyter-ptcuda-test:mlflow';

test('a job that logged a metric shows its last value, and Register makes a model version', async ({
  page,
  tmpPath
}) => {
  await openNotebook(
    page,
    tmpPath,
    'sweep.ipynb',
    notebook([
      { source: 'lr = 0.1', tags: ['parameters'] },
      {
        source: [
          'import mlflow, torch',
          'for step in range(3):',
          "    mlflow.log_metric('val_loss', round(lr * (3 - step), 4), step=step)",
          "mlflow.pytorch.log_model(torch.nn.Linear(2, 1), name='model', serialization_format='pickle')",
          "print('logged', flush=True)"
        ].join('\n')
      }
    ])
  );
  await page.menu.clickMenuItem('Run>Run as Training Job…');
  const form = page.locator('.jp-Dialog .jp-ptcuda-JobForm');
  await expect(form).toBeVisible();
  await form.locator('input[name="param:lr"]').fill('0.05');
  await form.locator('input[name="image"]').fill(IMAGE);
  await form.locator('input[name="gpus"]').fill('0');
  await page.locator('.jp-Dialog').getByRole('button', { name: 'Run job' }).click();

  const view = page.locator('#jupyter-ptcuda-jobs');
  await expect(view.locator('.jp-ptcuda-JobLog')).toBeVisible({ timeout: 60000 });
  const jobId = await view.locator('.jp-ptcuda-JobLog').getAttribute('data-job-id');
  const row = view.locator(`.jp-ptcuda-JobRow[data-job-id="${jobId}"]`);
  await expect(row, JSON.stringify(await jobJSON(page, jobId))).toHaveAttribute('data-state', /running|completed/, {
    timeout: 120000
  });
  // the last value the script logged (0.05 × 1 at step 2), and the -p value
  await expect(row.locator('[data-metric="val_loss"]')).toHaveText('0.05', { timeout: 120000 });
  await expect(row.locator('.jp-ptcuda-JobRow-params')).toContainText('lr=0.05');
  await expect(row).toHaveAttribute('data-state', 'completed', { timeout: 120000 });
  const run = row.locator('a.jp-ptcuda-JobRow-run');
  const runId = (await jobJSON(page, jobId)).meta.mlflow.run_id;
  await expect(run).toHaveAttribute('href', new RegExp(`/mlflow/#/experiments/\\d+/runs/${runId}$`));

  // Register appears once the run has its artifacts (the model); the version comes from MLflow's registry.
  const register = row.getByRole('button', { name: 'Register model' });
  await expect(register).toBeVisible({ timeout: 120000 });
  await expect(register, 'on screen in the narrow Jobs view (a card per job)').toBeInViewport({ ratio: 1 });
  await view.locator('select.jp-ptcuda-JobsView-chart').selectOption('val_loss');
  await expect(view.locator(`.jp-ptcuda-RunChart g[data-job-id="${jobId}"]`)).toContainText('0.05');
  const name = `ui-sweep-${jobId}`; // a new registered model (the server's store lives as long as the server)
  await register.click();
  const dialog = page.locator('.jp-Dialog');
  await dialog.locator('input').fill(name);
  await dialog.getByRole('button', { name: 'Register' }).click();
  await expect(view.locator('.jp-ptcuda-JobsView-message')).toContainText(`models:/${name}/1`);
  await page.screenshot({ path: screenshotPath('jobs-mlflow-register') });

  // a second registration under the same name is version 2; a bad name gets the server's message
  await register.click();
  await page.locator('.jp-Dialog input').fill(name);
  await page.locator('.jp-Dialog').getByRole('button', { name: 'Register' }).click();
  await expect(view.locator('.jp-ptcuda-JobsView-message')).toContainText(`models:/${name}/2`);
  await register.click();
  await page.locator('.jp-Dialog input').fill('bad name!');
  await page.locator('.jp-Dialog').getByRole('button', { name: 'Register' }).click();
  await expect(view.locator('[role="alert"]')).toContainText('model name');
});
