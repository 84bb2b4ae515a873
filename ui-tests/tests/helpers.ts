import { expect, IJupyterLabPageFixture } from '@jupyterlab/galata';
import * as path from 'path';

/** Where screenshots go (kept out of git with the rest of test-results/). */
export const SCREENSHOTS = path.join(__dirname, '..', 'test-results', 'screenshots');

export function screenshotPath(name: string): string {
  return path.join(SCREENSHOTS, `${name}.png`);
}

/** A notebook (nbformat 4) of code cells; a cell tagged "parameters" becomes the script's flags. */
export function notebook(
  cells: Array<{ source: string; tags?: string[] }>,
  kernel: { name: string; display_name: string } = { name: 'python3', display_name: 'Python 3 (ipykernel)' }
): string {
  return JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { ...kernel, language: 'python' },
      language_info: { name: 'python' }
    },
    cells: cells.map((c, i) => ({
      cell_type: 'code',
      id: `cell-${i}`,
      metadata: c.tags ? { tags: c.tags } : {},
      source: c.source,
      outputs: [],
      execution_count: null
    }))
  });
}

/** Start a command (without waiting for it: commands that open dialogs end when they close). */
export async function execute(page: IJupyterLabPageFixture, command: string, args: any = {}): Promise<void> {
  await page.evaluate(
    ({ command, args }) => {
      void (window as any).jupyterapp.commands.execute(command, args);
    },
    { command, args }
  );
}

/** A job as the REST API has it (to explain a failure). */
export async function jobJSON(page: IJupyterLabPageFixture, jobId: string | null): Promise<any> {
  const reply = await page.request.get(`/jupyter-ptcuda/jobs/${jobId}`);
  return reply.json();
}

/** Open the GPU panel (right side) and return it. */
export async function openPanel(page: IJupyterLabPageFixture) {
  await execute(page, 'jupyter-ptcuda:open-panel');
  const panel = page.locator('#jupyter-ptcuda-panel');
  await expect(panel).toBeVisible();
  return panel;
}

/** Upload a notebook into the test's folder and open it. */
export async function openNotebook(
  page: IJupyterLabPageFixture,
  tmpPath: string,
  name: string,
  content: string
): Promise<string> {
  const nbPath = `${tmpPath}/${name}`;
  await page.contents.uploadContent(content, 'text', nbPath);
  await page.notebook.openByPath(nbPath);
  await page.notebook.activate(name);
  return nbPath;
}

/** Wait until the active notebook's kernel is idle (status bar "| Idle"). */
export async function waitForIdle(page: IJupyterLabPageFixture, timeout = 120000): Promise<void> {
  await expect(page.locator('#jp-main-statusbar')).toContainText('| Idle', { timeout });
}
