import * as React from 'react';

import { countChecks, errorTitle, HealthModel, sortChecks } from '../health';
import { formatCheckValue } from '../format';
import { ICheck, IHealth } from '../tokens';
import { Linkified } from './linkified';

const STATUS_ICON: { [status: string]: string } = {
  fail: '✖',
  warn: '⚠',
  pass: '✔',
  skip: '–'
};

/** One check row; failures and warnings show their remediation. */
function CheckRow(props: { check: ICheck }): JSX.Element {
  const c = props.check;
  const value = formatCheckValue(c.value);
  return (
    <li
      className={`jp-ptcuda-Check jp-ptcuda-Check-${c.status}`}
      data-status={c.status}
    >
      <span
        className="jp-ptcuda-Check-icon"
        aria-label={c.status}
        title={c.status}
      >
        {STATUS_ICON[c.status] ?? '?'}
      </span>
      <div className="jp-ptcuda-Check-body">
        <div className="jp-ptcuda-Check-title">
          <span className="jp-ptcuda-Check-status">
            {c.status.toUpperCase()}
          </span>{' '}
          {c.title}
          {value && <span className="jp-ptcuda-Check-value">{value}</span>}
        </div>
        {c.remediation && (c.status === 'fail' || c.status === 'warn') && (
          <div className="jp-ptcuda-Check-remediation">
            <strong>Fix: </strong>
            <Linkified text={c.remediation} />
          </div>
        )}
        {c.detail && <div className="jp-ptcuda-Check-detail">{c.detail}</div>}
      </div>
    </li>
  );
}

function targetLabel(
  entry: IHealth,
  notebookOf: (kernelId: string) => string | null
): string {
  if (entry.target.image) {
    return `image ${entry.target.image}`;
  }
  const kid = entry.target.kernel_id ?? '';
  const nb = notebookOf(kid) ?? entry.target.notebook;
  return nb ? `kernel of ${nb}` : `kernel ${kid.slice(0, 8)}`;
}

/** One health check: running, its error, or its report with failures first. */
export function HealthResult(props: {
  entry: IHealth;
  notebookOf: (kernelId: string) => string | null;
}): JSX.Element {
  const { entry } = props;
  const report = entry.report;
  const checks = report ? sortChecks(report.checks) : [];
  const counts = countChecks(checks);
  const shown = checks.filter(c => c.status !== 'skip');
  const skipped = checks.filter(c => c.status === 'skip');
  const verdict =
    entry.state === 'running'
      ? 'running'
      : entry.state === 'error'
        ? 'error'
        : (report?.summary ?? 'error');
  return (
    <article
      className={`jp-ptcuda-HealthResult jp-ptcuda-HealthResult-${verdict}`}
      data-state={entry.state}
      data-summary={verdict}
    >
      <header>
        <span className={`jp-ptcuda-Badge jp-ptcuda-Badge-${verdict}`}>
          {verdict === 'running' ? 'running…' : verdict.toUpperCase()}
        </span>
        <span className="jp-ptcuda-HealthResult-target">
          {targetLabel(entry, props.notebookOf)}
        </span>
      </header>
      {entry.state === 'error' && entry.error && (
        <div className="jp-ptcuda-error" role="alert">
          <strong>{errorTitle(entry.error.reason)}</strong>
          <div>
            <Linkified text={entry.error.message} />
          </div>
        </div>
      )}
      {report && (
        <>
          <div className="jp-ptcuda-HealthResult-counts">
            {counts.fail} failed · {counts.warn} warnings · {counts.pass} passed
            · {counts.skip} skipped
            {report.duration_s !== undefined
              ? ` · ${report.duration_s.toFixed(1)} s`
              : ''}
          </div>
          {report.cuda &&
            report.cuda.available === false &&
            report.cuda.reason && (
              <div
                className="jp-ptcuda-HealthResult-cuda"
                data-reason={report.cuda.reason_code ?? ''}
              >
                {report.cuda.chosen ? 'No GPU' : 'CUDA unavailable'}:{' '}
                {report.cuda.reason}
              </div>
            )}
          <ul className="jp-ptcuda-Checks">
            {shown.map(c => (
              <CheckRow key={c.id} check={c} />
            ))}
          </ul>
          {skipped.length > 0 && (
            <details className="jp-ptcuda-Skipped">
              <summary>{skipped.length} skipped</summary>
              <ul className="jp-ptcuda-Checks">
                {skipped.map(c => (
                  <CheckRow key={c.id} check={c} />
                ))}
              </ul>
            </details>
          )}
          {(report.notes ?? []).map(n => (
            <div key={n} className="jp-ptcuda-muted">
              Note: {n}
            </div>
          ))}
        </>
      )}
    </article>
  );
}

export interface IHealthViewProps {
  model: HealthModel;
  /** The active notebook's kernel and notebook path, if any. */
  kernelId: string | null;
  notebookPath: string | null;
  /** Default for the image field. */
  defaultImage: string;
  notebookOf: (kernelId: string) => string | null;
}

/** "Run health check" for the active kernel or an image, and the recent results. */
export function HealthView(props: IHealthViewProps): JSX.Element {
  const [image, setImage] = React.useState(props.defaultImage);
  const [edited, setEdited] = React.useState(false);
  const [gpus, setGpus] = React.useState('all');
  React.useEffect(() => {
    // the settings, the kernelspecs or the active kernel may arrive after the first render
    if (!edited && props.defaultImage) {
      setImage(props.defaultImage);
    }
  }, [props.defaultImage]);
  const { model } = props;
  const run = (request: Parameters<HealthModel['run']>[0]) => {
    model.run(request).catch(() => {
      /* shown from model.startError */
    });
  };
  const start = model.startError;
  return (
    <div className="jp-ptcuda-Health" data-loaded={String(model.loaded)}>
      <div className="jp-ptcuda-Health-form">
        <button
          className="jp-Button jp-mod-styled jp-mod-accept jp-ptcuda-Health-kernel"
          disabled={!props.kernelId}
          title={
            props.kernelId
              ? `Check the kernel of ${props.notebookPath}: CUDA, driver, GPU count, a tensor round-trip…`
              : 'Open a notebook with a running kernel to check it'
          }
          onClick={() => props.kernelId && run({ kernel_id: props.kernelId })}
        >
          Run health check
        </button>
        <span className="jp-ptcuda-muted">
          {props.kernelId
            ? `on the kernel of ${props.notebookPath}`
            : 'no active notebook kernel'}
        </span>
      </div>
      <form
        className="jp-ptcuda-Health-form"
        onSubmit={e => {
          e.preventDefault();
          if (image.trim()) {
            run({
              image: image.trim(),
              gpus: gpus === 'all' || gpus === 'none' ? gpus : Number(gpus)
            });
          }
        }}
      >
        <input
          className="jp-mod-styled jp-ptcuda-Health-image"
          aria-label="Image to check"
          placeholder="image, e.g. jupyter-ptcuda/pytorch-kernel:latest"
          value={image}
          onChange={e => {
            setEdited(true);
            setImage(e.target.value);
          }}
        />
        <select
          className="jp-mod-styled jp-ptcuda-Health-gpus"
          aria-label="GPUs for the check"
          value={gpus}
          onChange={e => setGpus(e.target.value)}
        >
          <option value="all">all GPUs</option>
          <option value="1">1 GPU</option>
          <option value="none">no GPU</option>
        </select>
        <button
          type="submit"
          className="jp-Button jp-mod-styled jp-ptcuda-Health-check-image"
          disabled={!image.trim()}
        >
          Check image
        </button>
      </form>
      {start && (
        <div className="jp-ptcuda-error" role="alert">
          <strong>{errorTitle(start.reason)}</strong>
          <div>
            <Linkified text={start.message} />
          </div>
        </div>
      )}
      {model.checks.some(c => c.state !== 'running') && (
        <button
          className="jp-Button jp-mod-styled jp-ptcuda-Health-clear"
          title="Remove the finished results from this list"
          onClick={() => model.clear()}
        >
          Clear results
        </button>
      )}
      {model.checks.map(entry => (
        <HealthResult
          key={entry.id}
          entry={entry}
          notebookOf={props.notebookOf}
        />
      ))}
    </div>
  );
}
