import * as React from 'react';

import { formatMetric } from '../runs';

/**
 * A bar chart (plain SVG) of one metric's last value across jobs: one bar per job, labelled with
 * the job's name and the value. Bars start at 0 (or at the smallest value when some are negative).
 */
export function RunChart(props: {
  metric: string;
  bars: Array<{ id: string; label: string; value: number }>;
}): JSX.Element | null {
  const { bars, metric } = props;
  if (!bars.length) {
    return null;
  }
  const barH = 18;
  const gap = 4;
  const labelW = 160;
  const plotW = 240;
  const valueW = 70;
  const width = labelW + plotW + valueW;
  const height = bars.length * (barH + gap);
  const lo = Math.min(0, ...bars.map(b => b.value));
  const hi = Math.max(0, ...bars.map(b => b.value));
  const span = hi - lo || 1;
  const x = (v: number) => labelW + ((v - lo) / span) * plotW;
  return (
    <figure
      className="jp-ptcuda-RunChart"
      aria-label={`Chart of ${metric}`}
      data-metric={metric}
    >
      <figcaption>
        {metric} (last value), {bars.length} job{bars.length === 1 ? '' : 's'}
      </figcaption>
      <svg
        width="100%"
        viewBox={`0 0 ${width} ${height}`}
        style={{ maxWidth: `${width}px` }}
        role="img"
      >
        {bars.map((bar, i) => {
          const y = i * (barH + gap);
          const x0 = x(Math.min(0, bar.value));
          const x1 = x(Math.max(0, bar.value));
          return (
            <g key={bar.id} data-job-id={bar.id}>
              <title>{`${bar.label}: ${metric} = ${bar.value}`}</title>
              <text
                x={labelW - 6}
                y={y + barH - 5}
                textAnchor="end"
                className="jp-ptcuda-RunChart-label"
              >
                {bar.label.length > 24
                  ? `${bar.label.slice(0, 23)}…`
                  : bar.label}
              </text>
              <rect
                x={x0}
                y={y}
                width={Math.max(1, x1 - x0)}
                height={barH}
                className="jp-ptcuda-RunChart-bar"
              />
              <text
                x={labelW + plotW + 6}
                y={y + barH - 5}
                className="jp-ptcuda-RunChart-value"
              >
                {formatMetric(bar.value)}
              </text>
            </g>
          );
        })}
      </svg>
    </figure>
  );
}
