import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IParameterInfo, parametersInferred } from '../params';
import { IExportResult } from '../tokens';

/** The file an export of `notebookPath` is saved as, next to it: `<notebook>.train.py`, the one name
 * the toolbar, the menus, this dialog and the file browser use. */
export function scriptName(notebookPath: string): string {
  const base = notebookPath.split('/').pop() ?? notebookPath;
  return `${base.replace(/\.ipynb$/i, '')}.train.py`;
}

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
export function ExportReport(props: {
  result: IExportReply;
  /** The script's file name (default: from the saved path, else "train.py"). */
  name?: string;
}): JSX.Element {
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
      <h3>
        {props.name ??
          (r.saved_path ? r.saved_path.split('/').pop() : 'train.py')}
      </h3>
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
  const name = scriptName(notebookPath);
  const open = `Open ${name}`;
  const body = ReactWidget.create(<ExportReport result={result} name={name} />);
  body.addClass('jp-ptcuda-ExportDialog-body');
  const buttons = [Dialog.cancelButton({ label: 'Close' })];
  if (result.saved_path) {
    buttons.push(Dialog.okButton({ label: open, displayType: 'default' }));
  }
  buttons.push(
    Dialog.okButton({ label: 'Run as training job…', accept: true })
  );
  const reply = await showDialog({
    title: `Export of ${notebookPath} to ${name}`,
    body,
    buttons
  });
  if (!reply.button.accept) {
    return 'close';
  }
  return reply.button.label === open ? 'open' : 'run';
}
