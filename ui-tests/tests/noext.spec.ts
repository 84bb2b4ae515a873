/** Without the server extension the panel says so (never a blank panel). */
import { expect, test } from '@jupyterlab/galata';

import { openPanel, screenshotPath } from './helpers';

test('the panel says the server extension is missing', async ({ page }) => {
  const panel = await openPanel(page);
  const missing = panel.locator('.jp-ptcuda-Status-missing');
  await expect(missing).toContainText('Server extension not available');
  await expect(missing).toContainText('pip install jupyter-ptcuda');
  await panel.screenshot({ path: screenshotPath('no-server-extension') });
});
