/**
 * The GPU queue as a user sees it in JupyterLab (issue 23), against the server with two fake GPUs and
 * the real Docker engine (stand-in NVIDIA hook), at 1280×800 with the GPU panel open:
 *  - two 1-GPU jobs hold both GPUs; two more wait: the Jobs view shows them `queued` with their place,
 *    why they wait and for how long, the panel lists them under "Waiting for GPUs"; one is cancelled
 *    while it waits; when a GPU frees up the other starts by itself and the list goes away;
 *  - a notebook on a 1-GPU kernelspec while both GPUs are held: the kernel-start notice says it waits
 *    for a GPU and its place, then that it started after waiting N s.
 * Every job and kernel a test starts is cancelled or shut down at its end.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import { execute, jobJSON, notebook, openPanel, screenshotPath, waitForIdle } from './helpers';

const IMAGE = process.env.JUPYTER_PTCUDA_TEST_IMAGE || 'jupyter-ptcuda-test:cpu';
const KERNEL_1GPU = process.env.PTCUDA_UI_KERNEL_1GPU || 'ptcuda-test-1gpu';

test.use({ viewport: { width: 1280, height: 800 } });

/** A notebook that sleeps until its job is cancelled. */
const SLEEPER = notebook([
  { source: 'seconds = 900', tags: ['parameters'] },
  { source: "import time\nprint('holding the GPU', flush=True)\ntime.sleep(seconds)" }
]);

/** `POST jobs` of the sleeper asking for one GPU; the job as the server returned it (201). */
async function submit(page: IJupyterLabPageFixture, path: string, name: string): Promise<any> {
  const reply = await page.request.post('/jupyter-ptcuda/jobs', {
    data: { path, image: IMAGE, gpus: 1, name }
  });
  expect(reply.status(), await reply.text()).toBe(201);
  return reply.json();
}

async function waitForState(page: IJupyterLabPageFixture, jobId: string, state: string): Promise<void> {
  await expect
    .poll(async () => (await jobJSON(page, jobId)).state, { timeout: 120000, message: `job ${jobId} ${state}` })
    .toBe(state);
}

/** Cancel every job of these that has not ended, and wait until each has. */
async function cancelAll(page: IJupyterLabPageFixture, ids: string[]): Promise<void> {
  for (const id of ids) {
    await page.request.delete(`/jupyter-ptcuda/jobs/${id}`); // 409 once it has ended: fine
  }
  for (const id of ids) {
    await expect
      .poll(async () => (await jobJSON(page, id)).state, { timeout: 90000 })
      .toMatch(/^(cancelled|completed|failed|timed_out)$/);
  }
}

/** Two sleeper jobs holding both GPUs, running. */
async function holdBothGpus(page: IJupyterLabPageFixture, path: string, ids: string[]): Promise<void> {
  for (const name of ['hold-a', 'hold-b']) {
    ids.push((await submit(page, path, name)).id);
  }
  for (const id of ids) {
    await waitForState(page, id, 'running');
  }
}

/**
 * Shut down the kernel of the notebook at `path`: once the jobs are gone a kernel still waiting starts
 * (its session exists only then), so wait for its session up to `timeout` ms.
 */
async function shutDownKernelOf(page: IJupyterLabPageFixture, path: string, timeout: number): Promise<void> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const sessions: any[] = await (await page.request.get('/api/sessions')).json();
    const mine = sessions.filter(s => s.path === path);
    for (const session of mine) {
      await page.request.delete(`/api/sessions/${session.id}`);
    }
    if (mine.length || Date.now() > deadline) {
      return;
    }
    await page.waitForTimeout(500);
  }
}

test.describe('GPU queue', () => {
  let started: string[] = [];
  let kernelOf: string | null = null;

  test.beforeEach(() => {
    started = [];
    kernelOf = null;
  });

  test.afterEach(async ({ page }) => {
    await cancelAll(page, started);
    if (kernelOf) {
      await shutDownKernelOf(page, kernelOf, 60000);
    }
  });

  test('a job waits, queued with its place and reason, listed in the panel; it starts when a GPU frees', async ({
    page,
    tmpPath
  }) => {
    const path = `${tmpPath}/sleeper.ipynb`;
    await page.contents.uploadContent(SLEEPER, 'text', path);
    await holdBothGpus(page, path, started);

    const third = await submit(page, path, 'waits-c');
    started.push(third.id);
    expect(third.state, 'both GPUs are held: the third job waits').toBe('queued');
    const fourth = await submit(page, path, 'waits-d');
    started.push(fourth.id);
    expect(fourth.state).toBe('queued');

    const panel = await openPanel(page);
    await execute(page, 'jupyter-ptcuda:open-jobs');
    const view = page.locator('#jupyter-ptcuda-jobs');
    await expect(view).toBeVisible();

    // The Jobs view: state, place, why it waits (who holds the GPUs) and for how long.
    const rowC = view.locator(`.jp-ptcuda-JobRow[data-job-id="${third.id}"]`);
    const rowD = view.locator(`.jp-ptcuda-JobRow[data-job-id="${fourth.id}"]`);
    await expect(rowC).toHaveAttribute('data-state', 'queued');
    await expect(rowC.locator('.jp-ptcuda-Badge')).toHaveText('queued');
    await expect(rowC.locator('.jp-ptcuda-JobRow-place')).toHaveText('next in line');
    await expect(rowD.locator('.jp-ptcuda-JobRow-place')).toHaveText('1 ahead of you');
    const whyD = view.locator(`.jp-ptcuda-JobRow-waiting[data-job-id="${fourth.id}"]`);
    // (the holders by GPU: which job got GPU 0 is the engine's choice)
    await expect(whyD.locator('.jp-ptcuda-JobRow-reason')).toHaveText(
      /^waiting for 1 GPU: 1 request ahead of you; GPUs held by your job hold-[ab] and your job hold-[ab]$/
    );
    // the time waited goes on by itself
    const waited = whyD.locator('.jp-ptcuda-Elapsed');
    const first = Number(await waited.getAttribute('data-seconds'));
    await expect.poll(async () => Number(await waited.getAttribute('data-seconds'))).toBeGreaterThan(first + 1);
    await expect(whyD).toContainText(/waited \d+ s/);

    // The GPU panel: what waits, in order, named (this user's own), with what it asks for and how long.
    const waiting = panel.locator('.jp-ptcuda-Waiting');
    await expect(waiting.locator('h2')).toHaveText('Waiting for GPUs (2)');
    const items = waiting.locator('.jp-ptcuda-Waiting-item');
    await expect(items.nth(0).locator('.jp-ptcuda-Waiting-what')).toHaveText('job waits-c');
    await expect(items.nth(1).locator('.jp-ptcuda-Waiting-what')).toHaveText('job waits-d');
    await expect(items.nth(0)).toContainText('1 GPU ·');
    await expect(items.nth(0)).toHaveAttribute('title', /^waiting for 1 GPU: next in line; GPUs held by your job hold-/);
    await page.screenshot({ path: screenshotPath('queue-jobs-waiting-1280') });

    // Cancel the last one while it waits: it asks, says it leaves the line, and it never starts.
    await rowD.getByRole('button', { name: 'Cancel' }).click();
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('leaves the GPU queue');
    await dialog.getByRole('button', { name: 'Cancel job' }).click();
    await expect(rowD).toHaveAttribute('data-state', 'cancelled', { timeout: 30000 });
    await expect(view.locator('.jp-ptcuda-JobsView-message')).toContainText(
      'Job waits-d cancelled while it waited: it left the GPU queue before it started.'
    );
    expect((await jobJSON(page, fourth.id)).started ?? null).toBeNull();
    await expect(items).toHaveCount(1);
    await expect(rowC.locator('.jp-ptcuda-JobRow-place')).toHaveText('next in line');

    // The first holder ends: the waiting job starts by itself, and nothing is listed as waiting.
    await page.request.delete(`/jupyter-ptcuda/jobs/${started[0]}`);
    await expect(rowC).toHaveAttribute('data-state', 'running', { timeout: 90000 });
    await expect(view.locator(`.jp-ptcuda-JobRow-waiting[data-job-id="${third.id}"]`)).toHaveCount(0);
    await expect(panel.locator('.jp-ptcuda-Waiting')).toHaveCount(0); // no empty box
    await expect(panel.locator('[aria-label="Waiting for GPUs"]')).toHaveCount(0);
    const job = await jobJSON(page, third.id);
    expect(job.waited_s, 'it waited for the GPU before it started').toBeGreaterThan(0);
    await page.screenshot({ path: screenshotPath('queue-job-started-1280') });
  });

  test('a kernel asking for a GPU while both are held: the notice says it waits, then that it started', async ({
    page,
    tmpPath
  }) => {
    const path = `${tmpPath}/sleeper.ipynb`;
    await page.contents.uploadContent(SLEEPER, 'text', path);
    await holdBothGpus(page, path, started);
    const panel = await openPanel(page);

    // a name of its own: the server's notices of earlier tests (same names) are shown to a new page too
    const name = `wait-gpu-${Date.now().toString(36)}.ipynb`;
    const nbPath = `${tmpPath}/${name}`;
    await page.contents.uploadContent(
      notebook([{ source: "import os\nos.environ.get('NVIDIA_VISIBLE_DEVICES')" }], {
        name: KERNEL_1GPU,
        display_name: 'PyTorch (1 GPU, test)'
      }),
      'text',
      nbPath
    );
    kernelOf = nbPath;
    await page.notebook.openByPath(nbPath);
    const waitingToast = page.locator('.Toastify__toast--warning').filter({ hasText: name });
    // the pop-up shows ~140 characters: the notebook's name, its place and who holds the GPUs fit
    await expect(waitingToast).toContainText(
      new RegExp(
        `The kernel for ${name.replace('.', '\\.')} is waiting for 1 GPU: next in line; ` +
          'GPUs held by your job hold-[ab] and your job hold-[ab]'
      ),
      { timeout: 60000 }
    );
    // the same pop-up is updated when it starts
    const toast = page.locator(`.Toastify__toast[id="${await waitingToast.getAttribute('id')}"]`);
    // the panel lists the kernel as waiting
    const item = panel.locator('.jp-ptcuda-Waiting-item');
    await expect(item).toHaveCount(1);
    await expect(item.locator('.jp-ptcuda-Waiting-what')).toHaveText(`kernel ${name}`);
    await expect(toast).not.toHaveClass(/Toastify--animate/); // slid in: the whole pop-up in the picture
    await page.screenshot({ path: screenshotPath('queue-kernel-waiting-1280') });

    // A GPU frees up: the kernel starts, and the same notice says after how long.
    await page.request.delete(`/jupyter-ptcuda/jobs/${started[0]}`);
    await expect(toast).toContainText(/started after waiting \d+ s for a GPU/, { timeout: 90000 });
    await page.screenshot({ path: screenshotPath('queue-kernel-started-1280') });
    await waitForIdle(page);
    // it has the GPU that freed up
    await expect(page.locator('#jp-main-statusbar .jp-ptcuda-StatusItem')).toContainText(/GPU \d/, {
      timeout: 30000
    });
    await expect(panel.locator('.jp-ptcuda-Waiting')).toHaveCount(0);
  });
});
