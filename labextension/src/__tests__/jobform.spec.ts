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
