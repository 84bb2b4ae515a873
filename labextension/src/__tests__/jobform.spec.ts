/**
 * The "Run as training job" form for a notebook without a parameters cell: one field per top-level
 * assignment, said to be so, and the values become the `POST jobs` params.
 */
import {
  buildJobRequest,
  IParameterInfo,
  parameterHint,
  parametersInferred,
  parametersSource
} from '../params';
import { JobFormBody } from '../widgets/jobform';

const inferred: { [name: string]: IParameterInfo } = {
  max_steps: { type: 'int', default: 200000, cell: 12, inferred: true },
  lr: { type: 'float', default: 0.1, cell: 12, inferred: true }
};
const tagged: { [name: string]: IParameterInfo } = {
  lr: { type: 'float', default: 0.1, cell: 3, inferred: false }
};

function form(parameters: { [name: string]: IParameterInfo }): JobFormBody {
  return new JobFormBody({
    path: 'work/makemore.ipynb',
    parameters,
    kernel: null,
    defaultImage: 'img',
    gpuCount: 0
  });
}

describe('parameters source', () => {
  it('tells top-level assignments from a parameters cell', () => {
    expect(parametersInferred(inferred)).toBe(true);
    expect(parametersInferred(tagged)).toBe(false);
    expect(parametersSource(inferred)).toContain(
      'No cell is tagged "parameters", so these are the notebook\'s top-level assignments'
    );
    expect(parametersSource(tagged)).toBe('From the parameters cell (cell 3).');
    expect(parametersSource({})).toContain(
      'The notebook has no parameters: tag a cell "parameters", or assign values at the top level'
    );
    expect(parameterHint(inferred.max_steps)).toBe('int, cell 12');
    expect(parameterHint(tagged.lr)).toBe('float');
  });
});

describe('JobFormBody', () => {
  it('shows a field per top-level assignment and says where they come from', () => {
    const body = form(inferred);
    const node = body.node;
    expect(
      node.querySelector('.jp-ptcuda-JobForm-source')!.textContent
    ).toContain('No cell is tagged "parameters"');
    const field = node.querySelector<HTMLInputElement>(
      'input[data-param="max_steps"]'
    )!;
    expect(field.value).toBe('200000');
    expect(field.parentElement!.textContent).toContain('int, cell 12');
    field.value = '2000';
    const request = buildJobRequest(body.getValue(), inferred);
    expect(request.params).toEqual({ max_steps: 2000 });
    expect(request.path).toBe('work/makemore.ipynb');
  });

  it('says how to get parameters when there are none', () => {
    const node = form({}).node;
    expect(
      node.querySelector('.jp-ptcuda-JobForm-source')!.textContent
    ).toContain('assign values at the top level of a cell (epochs = 3)');
    expect(node.querySelectorAll('input[data-param]')).toHaveLength(0);
  });
});

describe('JobFormBody, before submitting', () => {
  const kernel = {
    kernel_id: 'k1',
    gpus: ['0', '1'],
    in_container: true,
    image: 'team/torch:2'
  } as any;

  it('warns that cells ran out of order, and says where the job writes', () => {
    const body = new JobFormBody({
      path: 'work/linear.ipynb',
      parameters: tagged,
      kernel: null,
      defaultImage: 'img',
      gpuCount: 2,
      orderWarning:
        'cells ran out of order: cell 4 (In [9]) is below cell 5 (In [3]) but ran before it.'
    });
    const warn = body.node.querySelector('.jp-ptcuda-JobForm-order')!;
    expect(warn.textContent).toContain('cell 4 (In [9]) is below cell 5');
    const note = body.node.querySelector('.jp-ptcuda-JobForm-folder')!;
    expect(note.textContent).toContain('runs in the notebook’s folder (work/)');
    expect(note.textContent).toContain('JUPYTER_PTCUDA_OUTPUT_DIR');
  });

  it('"same container as the kernel" shows the kernel’s GPUs, read-only', () => {
    const body = new JobFormBody({
      path: 'linear.ipynb',
      parameters: {},
      kernel,
      defaultImage: 'img',
      gpuCount: 2
    });
    const node = body.node;
    expect(node.querySelector('.jp-ptcuda-JobForm-order')).toBeNull();
    const gpus = node.querySelector<HTMLInputElement>('input[name="gpus"]')!;
    const copy = node.querySelector<HTMLInputElement>(
      'input[name="copyKernel"]'
    )!;
    expect(copy.checked).toBe(true);
    expect(gpus.readOnly).toBe(true);
    expect(gpus.value).toBe('2');
    expect(gpus.parentElement!.textContent).toContain('the kernel’s GPUs');
    copy.checked = false;
    copy.dispatchEvent(new Event('change'));
    expect(gpus.readOnly).toBe(false);
    expect(gpus.parentElement!.textContent).toContain('0 = no GPU');
    expect(body.getValue().kernelId).toBeNull();
  });
});
