import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  buildJobRequest,
  defaultText,
  IJobForm,
  IParameterInfo,
  parameterHint,
  parametersSource
} from '../params';
import { IJobRequest, IKernelInfo } from '../tokens';

export interface IJobFormOptions {
  /** The notebook (relative to the server root). */
  path: string;
  /** The export's parameters: one field each. */
  parameters: { [name: string]: IParameterInfo };
  /** The notebook's kernel as `GET kernels` sees it (a container kernel can be copied). */
  kernel: IKernelInfo | null;
  /** The image field's default when not copying a kernel. */
  defaultImage: string;
  /** How many GPUs there are (the GPU field's maximum; 0 when unknown). */
  gpuCount: number;
  /** Values to show again after a validation error. */
  previous?: IJobForm;
  /** The export's warning that cells ran out of order (shown before submitting), if any. */
  orderWarning?: string | null;
}

/** Where a job's files go: it runs in the notebook's folder, like the kernel. */
export function folderNote(path: string): string {
  const parts = path.split('/');
  parts.pop();
  const folder = parts.length ? parts.join('/') + '/' : 'the server root';
  return (
    `The job runs in the notebook’s folder (${folder}): files it saves under relative names ` +
    '(model.pt, plots) replace files of the same name there. Its log and manifest go to ' +
    'outputs/<job id>/; to keep what it saves apart, write to os.environ["JUPYTER_PTCUDA_OUTPUT_DIR"].'
  );
}

let counter = 0;

function field(
  parent: HTMLElement,
  label: string,
  input: HTMLInputElement | HTMLSelectElement,
  hint?: string
): void {
  const id = `jp-ptcuda-JobForm-${++counter}`;
  const row = document.createElement('div');
  row.className = 'jp-ptcuda-JobForm-row';
  const l = document.createElement('label');
  l.htmlFor = id;
  l.textContent = label;
  input.id = id;
  row.append(l, input);
  if (hint) {
    const h = document.createElement('span');
    h.className = 'jp-ptcuda-muted';
    h.textContent = hint;
    row.append(h);
  }
  parent.append(row);
}

/**
 * The "Run as training job" form: one field per notebook parameter (typed by the export), the
 * GPU count, where to run (a copy of the notebook's kernel container, or an image), a time limit.
 */
export class JobFormBody
  extends Widget
  implements Dialog.IBodyWidget<IJobForm>
{
  constructor(private _options: IJobFormOptions) {
    super();
    this.addClass('jp-ptcuda-JobForm');
    const prev = _options.previous;
    const node = this.node;

    if (_options.orderWarning) {
      const warn = document.createElement('div');
      warn.className = 'jp-ptcuda-warning jp-ptcuda-JobForm-order';
      warn.setAttribute('role', 'alert');
      warn.textContent = `Cells ran out of order. ${_options.orderWarning}`;
      node.append(warn);
    }
    const params = Object.entries(_options.parameters);
    const paramBox = document.createElement('fieldset');
    const legend = document.createElement('legend');
    legend.textContent = 'Parameters';
    paramBox.append(legend);
    const source = parametersSource(_options.parameters);
    if (source) {
      const p = document.createElement('p');
      p.className = 'jp-ptcuda-muted jp-ptcuda-JobForm-source';
      p.textContent = source;
      paramBox.append(p);
    }
    for (const [name, param] of params) {
      const input = document.createElement('input');
      input.name = `param:${name}`;
      input.dataset.param = name;
      const value =
        prev && name in prev.values ? prev.values[name] : defaultText(param);
      if (param.type === 'bool') {
        input.type = 'checkbox';
        input.checked = Boolean(value);
      } else {
        input.type = 'text';
        input.className = 'jp-mod-styled';
        input.value = String(value);
        input.placeholder = JSON.stringify(param.default);
      }
      field(paramBox, name, input, parameterHint(param));
    }
    node.append(paramBox);

    const runBox = document.createElement('fieldset');
    const legend2 = document.createElement('legend');
    legend2.textContent = 'Where it runs';
    runBox.append(legend2);
    const kernel = _options.kernel;
    if (kernel && kernel.in_container) {
      const copy = document.createElement('input');
      copy.type = 'checkbox';
      copy.name = 'copyKernel';
      copy.checked = prev ? !!prev.kernelId : true;
      field(runBox, 'Same container as the kernel', copy, kernel.image ?? '');
      this._copy = copy;
    }
    const image = document.createElement('input');
    image.type = 'text';
    image.name = 'image';
    image.className = 'jp-mod-styled';
    image.value = prev?.image ?? _options.defaultImage;
    image.placeholder = 'the server default image';
    field(runBox, 'Image', image);
    this._image = image;
    const gpus = document.createElement('input');
    gpus.type = 'number';
    gpus.name = 'gpus';
    gpus.min = '0';
    if (_options.gpuCount > 0) {
      gpus.max = String(_options.gpuCount);
    }
    gpus.className = 'jp-mod-styled';
    gpus.value = String(prev?.gpus ?? kernel?.gpus.length ?? 0);
    const kernelGpus = String(kernel?.gpus.length ?? 0);
    field(runBox, 'GPUs', gpus, '0 = no GPU');
    const gpuHint = gpus.nextElementSibling as HTMLElement | null;
    this._gpus = gpus;
    const timeout = document.createElement('input');
    timeout.type = 'number';
    timeout.name = 'timeout';
    timeout.min = '0';
    timeout.className = 'jp-mod-styled';
    timeout.value = String(prev?.timeoutMinutes ?? '');
    timeout.placeholder = 'no limit';
    field(runBox, 'Time limit (min)', timeout);
    this._timeout = timeout;
    node.append(runBox);
    const note = document.createElement('p');
    note.className = 'jp-ptcuda-muted jp-ptcuda-JobForm-folder';
    note.textContent = folderNote(_options.path);
    node.append(note);

    const syncImage = () => {
      const copy = !!this._copy?.checked;
      image.disabled = copy;
      // the kernel's container decides its GPUs: shown, not asked
      gpus.readOnly = copy;
      if (copy) {
        gpus.value = kernelGpus;
      }
      if (gpuHint) {
        gpuHint.textContent = copy
          ? 'the kernel’s GPUs (same container)'
          : '0 = no GPU';
      }
    };
    this._copy?.addEventListener('change', syncImage);
    syncImage();
  }

  getValue(): IJobForm {
    const values: { [name: string]: string | boolean } = {};
    this.node
      .querySelectorAll<HTMLInputElement>('input[data-param]')
      .forEach(input => {
        const name = input.dataset.param!;
        values[name] = input.type === 'checkbox' ? input.checked : input.value;
      });
    const copy = !!this._copy?.checked;
    return {
      path: this._options.path,
      kernelId: copy ? (this._options.kernel?.kernel_id ?? null) : null,
      image: copy ? '' : this._image.value,
      gpus: this._gpus.value,
      values,
      timeoutMinutes: this._timeout.value
    };
  }

  private _copy: HTMLInputElement | null = null;
  private _image: HTMLInputElement;
  private _gpus: HTMLInputElement;
  private _timeout: HTMLInputElement;
}

/**
 * Ask for the job's parameters; resolves with the `POST jobs` body, or null if cancelled.
 * A bad value shows what is wrong and the form again, with what was typed.
 */
export async function askJobRequest(
  options: IJobFormOptions
): Promise<IJobRequest | null> {
  let previous: IJobForm | undefined = undefined;
  for (;;) {
    const reply: Dialog.IResult<IJobForm> = await showDialog<IJobForm>({
      title: `Run ${options.path} as a training job`,
      body: new JobFormBody({ ...options, previous }),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run job' })],
      focusNodeSelector: 'input'
    });
    if (!reply.button.accept || !reply.value) {
      return null;
    }
    try {
      return buildJobRequest(reply.value, options.parameters);
    } catch (error) {
      previous = reply.value;
      await showErrorMessage(
        'Some values do not fit',
        (error as Error).message
      );
    }
  }
}
