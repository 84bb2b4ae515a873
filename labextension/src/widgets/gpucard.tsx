import * as React from 'react';

import { formatBytes, formatMemory, formatValue } from '../format';
import { IGpu, IHistorySeries, IHolder } from '../tokens';
import { Sparkline } from './sparkline';

export interface IGpuCardProps {
  gpu: IGpu;
  series: IHistorySeries | undefined;
  /** The active notebook's kernel: its holder entry is highlighted. */
  activeKernelId: string | null;
  /** Open a notebook (a holder's) in the main area. */
  onOpenNotebook?: (path: string) => void;
}

function holderLabel(holder: IHolder): string {
  if (holder.kind === 'other') {
    return holder.owner || 'another user';
  }
  if (holder.notebook) {
    return holder.notebook;
  }
  return holder.kind === 'job' ? `job ${holder.id}` : holder.id.slice(0, 8);
}

/** Who holds this GPU; the active notebook's kernel stands out. */
export function Holders(props: {
  holders: IHolder[];
  activeKernelId: string | null;
  onOpenNotebook?: (path: string) => void;
}): JSX.Element {
  if (!props.holders.length) {
    return (
      <div className="jp-ptcuda-Holders jp-ptcuda-muted">
        Free: no kernel or job holds it.
      </div>
    );
  }
  return (
    <ul className="jp-ptcuda-Holders" aria-label="Held by">
      {props.holders.map((h, i) => {
        const active =
          h.kind === 'kernel' &&
          !!props.activeKernelId &&
          h.id === props.activeKernelId;
        return (
          <li
            key={`${h.kind}:${h.id}:${i}`}
            className={`jp-ptcuda-Holder jp-ptcuda-Holder-${h.kind}${active ? ' jp-ptcuda-Holder-active' : ''}`}
            title={
              h.kind === 'other'
                ? 'Held by another user of this host'
                : `${h.kind} ${h.id}${h.container ? ` (container ${h.container})` : ''}`
            }
          >
            {h.kind !== 'other' && (
              <span className="jp-ptcuda-Holder-kind">{h.kind}</span>
            )}
            {h.notebook && props.onOpenNotebook ? (
              <a
                href="#"
                onClick={e => {
                  e.preventDefault();
                  props.onOpenNotebook!(h.notebook!);
                }}
              >
                {holderLabel(h)}
              </a>
            ) : (
              <span>{holderLabel(h)}</span>
            )}
            {active && (
              <span className="jp-ptcuda-Holder-badge">this notebook</span>
            )}
          </li>
        );
      })}
    </ul>
  );
}

/** One GPU: name, current values, utilisation and memory over time, and who holds it. */
export function GpuCard(props: IGpuCardProps): JSX.Element {
  const { gpu, series } = props;
  const holders = gpu.holders ?? [];
  const heldByActive = holders.some(
    h =>
      h.kind === 'kernel' &&
      !!props.activeKernelId &&
      h.id === props.activeKernelId
  );
  const total = gpu.memory_total ?? null;
  const memPercent =
    gpu.memory_used !== null && gpu.memory_used !== undefined && total
      ? (100 * gpu.memory_used) / total
      : null;
  const warnings: string[] = [];
  if (gpu.state !== 'ok') {
    warnings.push(
      gpu.state === 'lost'
        ? 'This GPU has fallen off the bus (NVML reports it lost): it needs a host reset.'
        : 'NVML reports an error for this GPU.'
    );
  }
  if (gpu.ecc_volatile_uncorrected) {
    warnings.push(
      `${gpu.ecc_volatile_uncorrected} uncorrected ECC error(s) since the driver loaded.`
    );
  }
  return (
    <section
      className={`jp-ptcuda-GpuCard${heldByActive ? ' jp-ptcuda-GpuCard-active' : ''}${
        gpu.state !== 'ok' ? ' jp-ptcuda-GpuCard-bad' : ''
      }`}
      data-gpu-index={gpu.index}
      aria-label={`GPU ${gpu.index}`}
    >
      <header className="jp-ptcuda-GpuCard-header">
        <span className="jp-ptcuda-GpuCard-index">GPU {gpu.index}</span>
        <span className="jp-ptcuda-GpuCard-name" title={gpu.uuid ?? ''}>
          {gpu.name ?? 'unknown'}
        </span>
        {heldByActive && (
          <span className="jp-ptcuda-Holder-badge">this notebook</span>
        )}
      </header>
      {warnings.map(w => (
        <div key={w} className="jp-ptcuda-warning" role="alert">
          ⚠ {w}
        </div>
      ))}
      <dl className="jp-ptcuda-GpuCard-stats">
        <div>
          <dt>Util</dt>
          <dd>{formatValue(gpu.utilization_gpu, '%')}</dd>
        </div>
        <div>
          <dt>Memory</dt>
          <dd>{formatMemory(gpu.memory_used, total)}</dd>
        </div>
        <div>
          <dt>Temp</dt>
          <dd>{formatValue(gpu.temperature_c, ' °C')}</dd>
        </div>
        <div>
          <dt>Power</dt>
          <dd>
            {formatValue(gpu.power_w, ' W')}
            {gpu.power_limit_w
              ? ` / ${formatValue(gpu.power_limit_w, ' W')}`
              : ''}
          </dd>
        </div>
      </dl>
      <div className="jp-ptcuda-GpuCard-charts">
        <Sparkline
          kind="util"
          label="Utilisation"
          values={series?.util ?? []}
          max={100}
          current={formatValue(gpu.utilization_gpu, '%')}
        />
        <Sparkline
          kind="mem"
          label="Memory"
          values={series?.mem_used ?? []}
          max={
            total ??
            Math.max(
              1,
              ...((series?.mem_used ?? []).filter(v => v !== null) as number[])
            )
          }
          current={
            memPercent === null
              ? formatBytes(gpu.memory_used)
              : `${memPercent.toFixed(0)}%`
          }
        />
      </div>
      {gpu.throttle_reasons && gpu.throttle_reasons.length > 0 && (
        <div className="jp-ptcuda-muted" title="NVML clock throttle reasons">
          Throttled: {gpu.throttle_reasons.join(', ')}
        </div>
      )}
      <Holders
        holders={holders}
        activeKernelId={props.activeKernelId}
        onOpenNotebook={props.onOpenNotebook}
      />
    </section>
  );
}
