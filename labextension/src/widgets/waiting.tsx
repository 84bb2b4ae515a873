/**
 * The GPU queue as JupyterLab shows it: how long something has waited (ticking each second from the
 * server's `waited_s`, no extra requests), a queued job's place and reason (Jobs view), and the GPU
 * panel's "Waiting" list (`GET queue`: the user's own requests named, other users' as "another user").
 */
import * as React from 'react';

import { formatGpuAsk, formatPlace, formatWaited } from '../format';
import { IJob, IQueueEntry } from '../tokens';

/**
 * `seconds` as the server said it at `at` (`Date.now()`), plus the time since: re-rendered each
 * second by a timer of its own while it is on the page.
 */
export function Elapsed(props: {
  seconds: number;
  at: number;
  /** ms between updates (default 1000). */
  tick?: number;
}): JSX.Element {
  const [, setNow] = React.useState(0);
  React.useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), props.tick ?? 1000);
    return () => clearInterval(timer);
  }, [props.tick]);
  const seconds = props.seconds + Math.max(0, Date.now() - props.at) / 1000;
  return (
    <span className="jp-ptcuda-Elapsed" data-seconds={Math.floor(seconds)}>
      {formatWaited(seconds)}
    </span>
  );
}

/** A queued job's place under its state badge: "2 ahead of you" (nothing when it has none). */
export function JobPlace(props: { job: IJob }): JSX.Element | null {
  const { job } = props;
  if (job.state !== 'queued' || !job.place) {
    return null;
  }
  return (
    <div className="jp-ptcuda-JobRow-place" data-place={job.place}>
      {formatPlace(job.place)}
    </div>
  );
}

/**
 * The line under a queued job's row: why it waits (the queue's reason, or on Kubernetes the
 * scheduler's) and for how long.
 */
export function JobWaiting(props: {
  job: IJob;
  /** When the job was read from the server (`Date.now()`). */
  at: number;
  columns: number;
  onSelect?: () => void;
}): JSX.Element | null {
  const { job } = props;
  if (job.state !== 'queued') {
    return null;
  }
  const reason = job.reason && job.reason !== 'queued' ? job.reason : '';
  return (
    <tr
      className="jp-ptcuda-JobRow-waiting"
      data-job-id={job.id}
      onClick={props.onSelect}
    >
      <td colSpan={props.columns}>
        <span className="jp-ptcuda-JobRow-reason">
          {reason || 'waiting to start'}
        </span>
        {typeof job.waited_s === 'number' && (
          <span className="jp-ptcuda-JobRow-waited">
            {' · waited '}
            <Elapsed seconds={job.waited_s} at={props.at} />
          </span>
        )}
      </td>
    </tr>
  );
}

/**
 * The GPU panel's "Waiting" list, in queue order: the user's own requests by name (the reason in
 * their tooltip), other users' as "another user"; what each asks for and how long it has waited.
 * Nothing at all when nothing waits.
 */
export function WaitingList(props: {
  waiting: IQueueEntry[];
  /** When the list was read (`Date.now()`). */
  at: number;
}): JSX.Element | null {
  const { waiting } = props;
  if (!waiting.length) {
    return null;
  }
  return (
    <section
      className="jp-ptcuda-Section jp-ptcuda-Waiting"
      aria-label="Waiting for GPUs"
    >
      <h2 className="jp-ptcuda-Section-title">
        Waiting for GPUs ({waiting.length})
      </h2>
      <ol className="jp-ptcuda-Waiting-list">
        {waiting.map(w => {
          const mine = !!w.id;
          return (
            <li
              key={w.id ?? `other:${w.place}`}
              className={`jp-ptcuda-Waiting-item${mine ? ' jp-ptcuda-Waiting-mine' : ' jp-ptcuda-Waiting-other'}`}
              data-place={w.place}
              title={
                mine
                  ? (w.reason ?? '')
                  : "Another user's request: it is not named to you"
              }
            >
              <span className="jp-ptcuda-Waiting-what">{w.what}</span>
              <span className="jp-ptcuda-Waiting-detail jp-ptcuda-muted">
                {formatGpuAsk(w.gpus)} ·{' '}
                <Elapsed seconds={w.waited_s} at={props.at} />
              </span>
            </li>
          );
        })}
      </ol>
    </section>
  );
}
