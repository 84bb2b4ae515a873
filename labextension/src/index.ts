import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  IFrame,
  MainAreaWidget,
  WidgetTracker
} from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { exportActive, IActionContext, runAsJob } from './actions';
import { ActiveKernel } from './activekernel';
import { HealthModel } from './health';
import { gpuIcon } from './icons';
import { JobsModel } from './jobs';
import { openContainerTerminal } from './terminal';
import { KernelTerminalButton } from './terminalbutton';
import { GpuModel } from './model';
import { BuildsModel } from './builds';
import { NoticesPoller } from './notices';
import { IGpuMonitor } from './tokens';
import { scriptName } from './widgets/exportdialog';
import { JobsView } from './widgets/jobsview';
import { GpuPanel } from './widgets/panel';
import { GpuStatusItem } from './widgets/statusitem';

export namespace CommandIDs {
  export const openPanel = 'jupyter-ptcuda:open-panel';
  export const healthCheckKernel = 'jupyter-ptcuda:health-check-kernel';
  export const exportScript = 'jupyter-ptcuda:export';
  export const runJob = 'jupyter-ptcuda:run-job';
  export const openJobs = 'jupyter-ptcuda:open-jobs';
  export const openKernelTerminal = 'jupyter-ptcuda:open-kernel-terminal';
  export const openDocs = 'jupyter-ptcuda:open-docs';
}

const PLUGIN_ID = 'jupyter-ptcuda:plugin';
const CATEGORY = 'PyTorch-CUDA';

/**
 * The GPU panel (right side), health checks, export to train.py, training jobs and the
 * status-bar item. Settings: schema/plugin.json.
 */
const plugin: JupyterFrontEndPlugin<IGpuMonitor> = {
  id: PLUGIN_ID,
  description:
    'GPU panel, health checks, export to train.py and training jobs for jupyter-ptcuda.',
  autoStart: true,
  provides: IGpuMonitor,
  optional: [
    INotebookTracker,
    ISettingRegistry,
    ICommandPalette,
    ILayoutRestorer,
    IStatusBar
  ],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    statusBar: IStatusBar | null
  ): IGpuMonitor => {
    const serverSettings: ServerConnection.ISettings =
      app.serviceManager.serverSettings;
    const model = new GpuModel({ serverSettings });
    const health = new HealthModel({ serverSettings });
    const builds = new BuildsModel({ serverSettings });
    void app.restored.then(() => health.load());
    // What the Hub broker did to this server's kernels (an idle GPU kernel shut down), shown once.
    const notices = new NoticesPoller({
      serverSettings,
      openNotebook: path =>
        void app.commands.execute('docmanager:open', { path })
    });
    void app.restored.then(() => notices.start());
    const jobs = new JobsModel({ serverSettings });
    const active = new ActiveKernel(tracker, app.serviceManager.kernelspecs);
    let defaultImage = '';

    const panel = new GpuPanel({
      model,
      health,
      active,
      builds,
      // the setting, else the active kernel's image, else a jupyter-ptcuda kernelspec's
      defaultImage: () => defaultImage || active.image,
      openNotebook: path =>
        void app.commands.execute('docmanager:open', { path }),
      openJobs: () => void app.commands.execute(CommandIDs.openJobs),
      openDocs: () => void app.commands.execute(CommandIDs.openDocs)
    });
    panel.id = 'jupyter-ptcuda-panel';
    panel.title.icon = gpuIcon;
    panel.title.caption = 'GPUs';
    app.shell.add(panel, 'right', { rank: 900 });
    restorer?.add(panel, 'jupyter-ptcuda-panel');

    const jobsTracker = new WidgetTracker<MainAreaWidget<JobsView>>({
      namespace: 'jupyter-ptcuda-jobs'
    });
    const openJobs = (jobId?: string): MainAreaWidget<JobsView> => {
      let widget = jobsTracker.currentWidget;
      if (!widget || widget.isDisposed) {
        const content = new JobsView(jobs, {
          serverSettings,
          openPath: path =>
            void app.commands.execute('filebrowser:go-to-path', { path }),
          openFile: path =>
            void app.commands.execute('docmanager:open', { path }),
          openTerminal: jobId =>
            void app.commands.execute('jupyter-ptcuda:open-kernel-terminal', {
              jobId
            })
        });
        widget = new MainAreaWidget({ content });
        widget.id = 'jupyter-ptcuda-jobs';
        widget.title.label = 'Training jobs';
        widget.title.icon = gpuIcon;
        widget.title.closable = true;
        void jobsTracker.add(widget);
      }
      if (!widget.isAttached) {
        // Beside the notebook the first time; once the main area is split, as a tab (reopening it
        // must not halve the right-hand area again).
        const layout = (app.shell as any).saveLayout?.();
        const split = layout?.mainArea?.dock?.main?.type === 'split-area';
        app.shell.add(widget, 'main', {
          mode: split ? 'tab-after' : 'split-right'
        });
      }
      app.shell.activateById(widget.id);
      if (jobId) {
        widget.content.select(jobId);
      }
      void jobs.refresh().catch(() => undefined);
      return widget;
    };
    if (restorer) {
      void restorer.restore(jobsTracker, {
        command: CommandIDs.openJobs,
        name: () => 'jobs'
      });
    }

    const ctx: IActionContext = {
      app,
      tracker,
      model,
      jobs,
      serverSettings,
      defaultImage: () => defaultImage,
      openJobs
    };
    const hasNotebook = () => !!tracker?.currentWidget;

    let docsWidget: MainAreaWidget<IFrame> | null = null;
    app.commands.addCommand(CommandIDs.openDocs, {
      label: 'jupyter-ptcuda Help',
      caption:
        'The documentation of the jupyter-ptcuda installed on this server (kernels, GPUs, health, jobs)',
      execute: () => {
        // A tab with the server's page (same origin: its login cookie is sent; no scripts run in it;
        // its links open in a browser tab).
        if (docsWidget && !docsWidget.isDisposed) {
          app.shell.activateById(docsWidget.id);
          return;
        }
        const frame = new IFrame({
          sandbox: [
            'allow-same-origin',
            'allow-popups',
            'allow-popups-to-escape-sandbox' as unknown as IFrame.SandboxExceptions
          ]
        });
        frame.url = URLExt.join(
          serverSettings.baseUrl,
          'jupyter-ptcuda',
          'docs'
        );
        docsWidget = new MainAreaWidget({ content: frame });
        docsWidget.id = 'jupyter-ptcuda-docs';
        docsWidget.title.label = 'jupyter-ptcuda Help';
        docsWidget.title.icon = gpuIcon;
        docsWidget.title.closable = true;
        app.shell.add(docsWidget, 'main');
        app.shell.activateById(docsWidget.id);
      }
    });
    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'Show GPU Panel',
      caption: 'GPUs: utilisation, memory, holders, health checks',
      icon: args => (args.isPalette ? undefined : gpuIcon),
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.healthCheckKernel, {
      label: 'Run Health Check on the Active Kernel',
      caption:
        'Check CUDA, driver, GPU count and a tensor round-trip in the notebook kernel',
      isEnabled: () => !!active.kernelId,
      execute: async () => {
        app.shell.activateById(panel.id);
        if (active.kernelId) {
          await health
            .run({ kernel_id: active.kernelId })
            .catch(() => undefined);
        }
      }
    });
    app.commands.addCommand(CommandIDs.exportScript, {
      label: () => {
        const path = tracker?.currentWidget?.context.path;
        return `Export to ${path ? scriptName(path) : '<notebook>.train.py'}`;
      },
      caption:
        'Export this notebook to a plain script next to it (<notebook>.train.py), with a report of what was rewritten',
      isEnabled: hasNotebook,
      execute: () => exportActive(ctx)
    });
    app.commands.addCommand(CommandIDs.runJob, {
      label: 'Run as Training Job…',
      caption:
        'Run this notebook as a batch job in its kernel image, with parameters and GPUs',
      isEnabled: hasNotebook,
      execute: () => runAsJob(ctx)
    });
    app.commands.addCommand(CommandIDs.openJobs, {
      label: 'Show Training Jobs',
      caption: 'Training jobs: state, exit code, log, cancel',
      execute: args => {
        openJobs(typeof args.jobId === 'string' ? args.jobId : undefined);
      }
    });
    app.commands.addCommand(CommandIDs.openKernelTerminal, {
      label: args =>
        args.jobId
          ? 'Open Terminal in Job Container'
          : 'Open Terminal in Kernel Container',
      caption:
        'A shell inside the container, as the kernel’s user, in the notebook’s folder',
      isEnabled: args =>
        !!args.jobId || (!!active.kernelId && active.isContainerKernel),
      execute: args => {
        const target =
          typeof args.jobId === 'string'
            ? { job_id: args.jobId }
            : active.kernelId
              ? { kernel_id: active.kernelId }
              : null;
        if (!target) {
          return undefined;
        }
        const what =
          'job_id' in target
            ? `job ${jobs.job(String(target.job_id))?.name || target.job_id}`
            : active.path
              ? `kernel of ${active.path.split('/').pop()}`
              : undefined;
        return openContainerTerminal(
          app.commands,
          target,
          serverSettings,
          what
        );
      }
    });
    const notebookOfKernel = (kernelId: string): string | undefined => {
      let found: string | undefined;
      tracker?.forEach(panel => {
        if (panel.sessionContext.session?.kernel?.id === kernelId) {
          found = `kernel of ${panel.context.path.split('/').pop()}`;
        }
      });
      return found;
    };
    app.docRegistry.addWidgetExtension(
      'Notebook',
      new KernelTerminalButton(
        kernelId =>
          openContainerTerminal(
            app.commands,
            { kernel_id: kernelId },
            serverSettings,
            notebookOfKernel(kernelId)
          ),
        app.serviceManager.kernelspecs
      )
    );
    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: CATEGORY });
    }

    // The status bar needs GPU data only while a container kernel's notebook is active: with the
    // panel hidden and no such notebook, nothing polls.
    let showStatusBar = true;
    let statusItem: GpuStatusItem | null = null;
    const syncStatusDemand = () => {
      model.statusBarEnabled =
        !!statusItem && showStatusBar && active.isContainerKernel;
    };
    active.changed.connect(syncStatusDemand);
    if (statusBar) {
      statusItem = new GpuStatusItem(model, active, () =>
        app.shell.activateById(panel.id)
      );
      const item = statusItem;
      statusBar.registerStatusItem('jupyter-ptcuda:status', {
        item,
        align: 'left',
        rank: 4,
        isActive: () => showStatusBar && item.hasContent,
        activeStateChanged: item.contentChanged
      });
    }
    syncStatusDemand();

    if (settingRegistry) {
      const apply = (settings: ISettingRegistry.ISettings) => {
        const c = settings.composite as any;
        model.refreshInterval = Number(c.refreshInterval ?? 2000);
        model.statusBarInterval = Number(c.statusBarInterval ?? 10000);
        model.historyMinutes = Number(c.historyMinutes ?? 10);
        showStatusBar = c.showStatusBar !== false;
        syncStatusDemand();
        jobs.refreshInterval = Number(c.jobsRefreshInterval ?? 3000);
        defaultImage = String(c.defaultImage ?? '');
      };
      Promise.all([settingRegistry.load(PLUGIN_ID), app.restored])
        .then(([settings]) => {
          apply(settings);
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error('jupyter-ptcuda: cannot load settings', reason);
        });
    }

    return model;
  }
};

export default plugin;
