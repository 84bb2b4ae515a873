/**
 * The export dialog's report as the user reads it: the warning that the notebook's cells ran out
 * of order (naming the cells and their counts), and where the parameters come from.
 */
import * as React from 'react';
import { renderToStaticMarkup } from 'react-dom/server';

import {
  ExportReport,
  IExportReply,
  scriptName
} from '../widgets/exportdialog';

const orderWarning =
  'cells ran out of order: cell 32 (In [710]) is below cell 31 (In [798]) but ran before it. ' +
  'The script runs every cell once, top to bottom, so it can fail (or compute something else) ' +
  'where the notebook did not. Check with Kernel > Restart Kernel and Run All Cells, save, and export again.';

/** A `POST exports` reply, as the server sends it for Karpathy's makemore part 2. */
const makemore: IExportReply = {
  script: '#!/usr/bin/env python3\n',
  report: [
    {
      cell: 5,
      kind: 'parameters',
      source: 'block_size = 3',
      action:
        'flag --block-size (int): a top-level assignment, as no cell is tagged parameters'
    }
  ],
  parameters: {
    block_size: { type: 'int', default: 3, cell: 5, inferred: true }
  },
  warnings: [orderWarning, 'cell 9: something else'],
  execution_order: {
    out_of_order: [{ cell: 32, count: 710, after_cell: 31, after_count: 798 }],
    not_run: [1, 2]
  }
};

function dom(element: React.ReactElement): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = renderToStaticMarkup(element);
  return div;
}

describe('ExportReport', () => {
  it('shows that the cells ran out of order, naming the cells and their counts, first', () => {
    const node = dom(<ExportReport result={makemore} />);
    const warnings = node.querySelectorAll('.jp-ptcuda-Export-warnings li');
    expect(warnings).toHaveLength(2);
    expect(warnings[0].textContent).toBe(`⚠ ${orderWarning}`);
    const order = node.querySelector('.jp-ptcuda-Export-order');
    expect(order).not.toBeNull();
    expect(order!.textContent).toContain(
      'cell 32 (In [710]) is below cell 31 (In [798])'
    );
    expect(order!.textContent).toContain('Restart Kernel and Run All Cells');
  });

  it('marks no warning as the order warning when the cells ran in order', () => {
    const node = dom(
      <ExportReport
        result={{
          ...makemore,
          warnings: ['cell 2: %tensorboard: commented out'],
          execution_order: { out_of_order: [], not_run: [] }
        }}
      />
    );
    expect(node.querySelector('.jp-ptcuda-Export-order')).toBeNull();
    expect(node.querySelector('.jp-ptcuda-warning')!.textContent).toContain(
      '%tensorboard'
    );
  });

  it('says which top-level assignments became the flags', () => {
    const node = dom(<ExportReport result={makemore} />);
    const params = node.querySelector('.jp-ptcuda-Export-params')!;
    expect(params.textContent).toContain(
      'No cell is tagged "parameters", so these top-level assignments became the flags of the script'
    );
    expect(params.textContent).toContain('--block-size int = 3 (cell 5)');
    expect(
      node.querySelector('.jp-ptcuda-Export-report')!.textContent
    ).toContain('a top-level assignment, as no cell is tagged parameters');
  });

  it('keeps the parameters cell wording for a tagged cell', () => {
    const node = dom(
      <ExportReport
        result={{
          script: '',
          report: [],
          parameters: { lr: { type: 'float', default: 0.1, cell: 3 } }
        }}
      />
    );
    const params = node.querySelector('.jp-ptcuda-Export-params')!;
    expect(params.textContent).toBe(
      'Parameters (flags of the script): --lr float = 0.1'
    );
    expect(node.querySelector('.jp-ptcuda-Export-warnings')).toBeNull();
  });
});

describe('scriptName', () => {
  it('is <notebook>.train.py, the one name used everywhere', () => {
    expect(scriptName('runs/mnist.ipynb')).toBe('mnist.train.py');
    expect(scriptName('Train.IPYNB')).toBe('Train.train.py');
  });
});
