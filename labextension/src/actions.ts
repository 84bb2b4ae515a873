/**
 * What the commands do: export the active notebook to train.py, run it as a training job, show
 * the Jobs view. Called from the command handlers in index.ts.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';

import { errorTitle } from './health';
import { JobsModel } from './jobs';
import { GpuModel } from './model';
import { exportNotebook } from './notebookexport';
import { ApiError, errorMessage } from './request';
import { IExportResult, IJob } from './tokens';
import { IExportReply, showExportDialog } from './widgets/exportdialog';
import { askJobRequest } from './widgets/jobform';
import { JobsView } from './widgets/jobsview';

export interface IActionContext {
  app: JupyterFrontEnd;
  tracker: INotebookTracker | null;
  model: GpuModel;
  jobs: JobsModel;
  serverSettings: ServerConnection.ISettings;
  defaultImage: () => string;
  /** Open (or reveal) the Jobs view, showing this job's log. */
  openJobs: (jobId?: string) => MainAreaWidget<JobsView>;
}

/** The active notebook, saved first if it has unsaved changes (the export reads the file). */
async function savedNotebook(
  ctx: IActionContext
): Promise<NotebookPanel | null> {
  const panel = ctx.tracker?.currentWidget ?? null;
  if (!panel) {
    await showErrorMessage('No notebook', 'Open a notebook first.');
    return null;
  }
  await panel.context.ready;
  if (panel.context.model.dirty && !panel.context.model.readOnly) {
    await panel.context.save();
  }
  return panel;
}

/** Export the active notebook to `<stem>.train.py` next to it and show the report. */
export async function exportActive(
  ctx: IActionContext
): Promise<IExportResult | null> {
  const panel = await savedNotebook(ctx);
  if (!panel) {
    return null;
  }
  const path = panel.context.path;
  let result: IExportResult;
  try {
    result = await exportNotebook(path, { save: true }, ctx.serverSettings);
  } catch (error) {
    await showErrorMessage(`Cannot export ${path}`, errorMessage(error));
    return null;
  }
  const choice = await showExportDialog(result, path);
  if (choice === 'open' && result.saved_path) {
    await ctx.app.commands.execute('docmanager:open', {
      path: result.saved_path
    });
  } else if (choice === 'run') {
    await runAsJob(ctx, result);
  }
  return result;
}

/**
 * Ask for the parameters (from the export), GPUs and where to run, submit the job, then show
 * its live log in the Jobs view.
 */
export async function runAsJob(
  ctx: IActionContext,
  exported?: IExportResult
): Promise<IJob | null> {
  const panel = await savedNotebook(ctx);
  if (!panel) {
    return null;
  }
  const path = panel.context.path;
  if (!exported) {
    try {
      exported = await exportNotebook(path, {}, ctx.serverSettings);
    } catch (error) {
      await showErrorMessage(`Cannot export ${path}`, errorMessage(error));
      return null;
    }
  }
  const kernelId = panel.sessionContext.session?.kernel?.id ?? null;
  const request = await askJobRequest({
    path,
    parameters: exported.parameters ?? {},
    kernel: ctx.model.kernel(kernelId),
    defaultImage: ctx.defaultImage(),
    gpuCount: ctx.model.snapshot?.gpus.length ?? 0,
    orderWarning: (
      (exported as IExportReply).execution_order?.out_of_order ?? []
    ).length
      ? (exported.warnings?.[0] ?? null)
      : null
  });
  if (!request) {
    return null;
  }
  let job: IJob;
  try {
    job = await ctx.jobs.submit(request);
  } catch (error) {
    const reason = error instanceof ApiError ? error.reason : null;
    const title =
      reason === 'EngineUnavailable'
        ? errorTitle(reason)
        : `Cannot start a job from ${path}`;
    ctx.openJobs().content.setNotice({ title, message: errorMessage(error) });
    await showErrorMessage(title, errorMessage(error));
    return null;
  }
  const view = ctx.openJobs(job.id);
  view.content.setNotice(null);
  return job;
}
