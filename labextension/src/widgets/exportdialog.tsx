import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IParameterInfo, parametersInferred } from '../params';
import { IExportResult } from '../tokens';

/** What `POST exports` adds to {@link IExportResult}: where each parameter comes from, and whether
 * the cells ran in order (the first warning says so when they did not). */
export interface IExportReply extends IExportResult {
  parameters?: { [name: string]: IParameterInfo };
  execution_order?: {
    out_of_order: {
      cell: number;
      count: number;
      after_cell: number;
      after_count: number;
    }[];
    not_run: number[];
  };
}

/**
 * The export report: warnings first (cells run out of order is the first of them), then where
 * the parameters come from, requirements, what was rewritten in which cell, the script.
 */
export function ExportReport(props: { result: IExportReply }): JSX.Element {
  const r = props.result;
  const params = Object.entries(r.parameters ?? {});
  const inferred = parametersInferred(r.parameters ?? {});
  const outOfOrder = (r.execution_order?.out_of_order ?? []).length > 0;
  return (
    <div className="jp-ptcuda-Export">
      {r.saved_path && (
        <p className="jp-ptcuda-Export-saved">
          Saved as <code>{r.saved_path}</code> next to the notebook.
        </p>
      )}
      {(r.warnings ?? []).length > 0 && (
        <ul className="jp-ptcuda-Export-warnings">
          {r.warnings!.map((w, i) => (
            <li
              key={w}
              className={
                outOfOrder && i === 0
                  ? 'jp-ptcuda-warning jp-ptcuda-Export-order'
                  : 'jp-ptcuda-warning'
              }
            >
              ⚠ {w}
            </li>
          ))}
        </ul>
      )}
      {params.length > 0 && (
        <p className="jp-ptcuda-Export-params">
          {inferred
            ? 'No cell is tagged "parameters", so these top-level assignments became the flags of the script: '
            : 'Parameters (flags of the script): '}
          {params.map(([name, p]) => (
            <code key={name} className="jp-ptcuda-Export-param">
              --{name.replace(/_/g, '-')} {p.type} = {JSON.stringify(p.default)}
              {inferred && p.cell ? ` (cell ${p.cell})` : ''}
            </code>
          ))}
        </p>
      )}
      {(r.requirements ?? []).length > 0 && (
        <p>
          Requirements: <code>{r.requirements!.join(' ')}</code>
        </p>
      )}
      <h3>Export report</h3>
      {r.report.length === 0 ? (
        <p className="jp-ptcuda-muted">
          Nothing needed rewriting: the cells are plain Python.
        </p>
      ) : (
        <table className="jp-ptcuda-Export-report">
          <thead>
            <tr>
              <th>Cell</th>
              <th>Kind</th>
              <th>Source</th>
              <th>Became</th>
            </tr>
          </thead>
          <tbody>
            {r.report.map((item, i) => (
              <tr key={i}>
                <td>{item.cell ?? ''}</td>
                <td>{item.kind ?? ''}</td>
                <td>
                  <code>{item.source ?? ''}</code>
                </td>
                <td>{item.action ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>train.py</h3>
      <pre className="jp-ptcuda-Export-script">{r.script}</pre>
    </div>
  );
}

export type ExportChoice = 'close' | 'open' | 'run';

/** Show an export; resolves with what the user chose next. */
export async function showExportDialog(
  result: IExportReply,
  notebookPath: string
): Promise<ExportChoice> {
  const body = ReactWidget.create(<ExportReport result={result} />);
  body.addClass('jp-ptcuda-ExportDialog-body');
  const buttons = [Dialog.cancelButton({ label: 'Close' })];
  if (result.saved_path) {
    buttons.push(
      Dialog.okButton({ label: 'Open train.py', displayType: 'default' })
    );
  }
  buttons.push(
    Dialog.okButton({ label: 'Run as training job…', accept: true })
  );
  const reply = await showDialog({
    title: `Export of ${notebookPath} to train.py`,
    body,
    buttons
  });
  if (!reply.button.accept) {
    return 'close';
  }
  return reply.button.label === 'Open train.py' ? 'open' : 'run';
}
