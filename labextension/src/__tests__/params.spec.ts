import { buildJobRequest, defaultText, parseValue } from '../params';
import { IExportParameter } from '../tokens';

const parameters: { [name: string]: IExportParameter } = {
  epochs: { type: 'int', default: 2 },
  lr: { type: 'float', default: 0.01 },
  name: { type: 'str', default: 'demo' },
  amp: { type: 'bool', default: false },
  layers: { type: 'json', default: [64, 32] },
  extra: { type: 'json', default: null }
};

describe('parseValue', () => {
  it('reads each type', () => {
    expect(parseValue('epochs', parameters.epochs, ' 5 ')).toBe(5);
    expect(parseValue('lr', parameters.lr, '1e-3')).toBe(0.001);
    expect(parseValue('name', parameters.name, ' spaced ')).toBe(' spaced ');
    expect(parseValue('amp', parameters.amp, true)).toBe(true);
    expect(parseValue('amp', parameters.amp, 'no')).toBe(false);
    expect(parseValue('layers', parameters.layers, '[128]')).toEqual([128]);
    expect(parseValue('extra', parameters.extra, 'plain text')).toBe(
      'plain text'
    );
  });

  it('names the parameter when a value does not fit', () => {
    expect(() => parseValue('epochs', parameters.epochs, '2.5')).toThrow(
      /epochs: expected a whole number/
    );
    expect(() => parseValue('lr', parameters.lr, 'fast')).toThrow(
      /lr: expected a number/
    );
    expect(() => parseValue('layers', parameters.layers, '[1,')).toThrow(
      /layers: expected JSON/
    );
  });
});

describe('defaultText', () => {
  it('shows defaults as the form fields hold them', () => {
    expect(defaultText(parameters.epochs)).toBe('2');
    expect(defaultText(parameters.name)).toBe('demo');
    expect(defaultText(parameters.amp)).toBe(false);
    expect(defaultText(parameters.layers)).toBe('[64,32]');
  });
});

describe('buildJobRequest', () => {
  const values = {
    epochs: '2',
    lr: '0.01',
    name: 'demo',
    amp: false,
    layers: '[64,32]',
    extra: 'null'
  };

  it('sends only the parameters that differ from the defaults', () => {
    const req = buildJobRequest(
      {
        path: 'a/train.ipynb',
        image: 'img:cpu',
        gpus: '0',
        values: { ...values, epochs: '3', amp: true }
      },
      parameters
    );
    expect(req).toEqual({
      path: 'a/train.ipynb',
      image: 'img:cpu',
      gpus: 'none',
      params: { epochs: 3, amp: true }
    });
  });

  it("copies the kernel's container instead of naming an image, with GPUs and a time limit", () => {
    const req = buildJobRequest(
      {
        path: 'n.ipynb',
        kernelId: 'k1',
        image: 'ignored',
        gpus: 2,
        values,
        timeoutMinutes: '1.5'
      },
      parameters
    );
    expect(req).toEqual({
      path: 'n.ipynb',
      kernel_id: 'k1',
      gpus: 2,
      params: {},
      timeout: 90
    });
  });

  it('lists every bad field at once', () => {
    expect(() =>
      buildJobRequest(
        {
          path: 'n.ipynb',
          gpus: 'two',
          values: { ...values, epochs: 'x', lr: '' }
        },
        parameters
      )
    ).toThrow(/epochs: .*\n.*lr: .*\n.*GPUs: /s);
  });

  it('leaves out the image when none is given (the server default)', () => {
    const req = buildJobRequest(
      { path: 'n.ipynb', image: '  ', gpus: '1', values: {} },
      parameters
    );
    expect(req).toEqual({ path: 'n.ipynb', gpus: 1, params: {} });
  });
});
