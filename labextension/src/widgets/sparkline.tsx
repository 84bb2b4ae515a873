import * as React from 'react';

/** One unbroken run of a sparkline: its SVG path and its first and last x. */
export interface ISegment {
  d: string;
  x0: number;
  x1: number;
}

/**
 * The line segments of a series scaled into a `width`×`height` box, oldest on the left. Nulls
 * (a sample the device did not give) break the line; values are clamped to [0, max].
 */
export function sparklinePaths(
  values: Array<number | null>,
  max: number,
  width: number,
  height: number
): ISegment[] {
  const n = values.length;
  if (n === 0 || !(max > 0)) {
    return [];
  }
  const step = n > 1 ? width / (n - 1) : 0;
  const segments: ISegment[] = [];
  let points: string[] = [];
  let x0 = 0;
  let x1 = 0;
  const flush = () => {
    if (points.length) {
      segments.push({ d: points.join(' '), x0, x1 });
      points = [];
    }
  };
  values.forEach((v, i) => {
    if (v === null || v === undefined || !isFinite(v)) {
      flush();
      return;
    }
    const x = n > 1 ? i * step : width;
    const y = height - (Math.min(Math.max(v, 0), max) / max) * height;
    if (!points.length) {
      x0 = x;
    }
    x1 = x;
    points.push(`${points.length ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`);
  });
  flush();
  return segments;
}

export interface ISparklineProps {
  /** Oldest first. */
  values: Array<number | null>;
  /** The value at the top of the chart (100 for %, the memory total...). */
  max: number;
  /** What the chart shows, for its title and accessible name. */
  label: string;
  /** The current value as text. */
  current: string;
  /** CSS class modifier for the colour (util, mem). */
  kind: string;
}

const W = 200;
const H = 40;

/** A small line chart over time (plain SVG): the GPU's history as the server recorded it. */
export function Sparkline(props: ISparklineProps): JSX.Element {
  const paths = sparklinePaths(props.values, props.max, W, H);
  return (
    <figure
      className={`jp-ptcuda-Sparkline jp-ptcuda-Sparkline-${props.kind}`}
      data-points={props.values.length}
    >
      <figcaption>
        <span className="jp-ptcuda-Sparkline-label">{props.label}</span>
        <span className="jp-ptcuda-Sparkline-current">{props.current}</span>
      </figcaption>
      <svg
        viewBox={`0 0 ${W} ${H}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={`${props.label} over time, now ${props.current}`}
      >
        <line
          className="jp-ptcuda-Sparkline-grid"
          x1={0}
          x2={W}
          y1={H / 2}
          y2={H / 2}
        />
        {paths.map((seg, i) => (
          <React.Fragment key={i}>
            <path
              className="jp-ptcuda-Sparkline-area"
              d={`${seg.d} L${seg.x1.toFixed(1)},${H} L${seg.x0.toFixed(1)},${H} Z`}
            />
            <path className="jp-ptcuda-Sparkline-line" d={seg.d} />
          </React.Fragment>
        ))}
        {paths.length === 0 && (
          <text
            x={W / 2}
            y={H / 2 + 4}
            textAnchor="middle"
            className="jp-ptcuda-Sparkline-empty"
          >
            no data yet
          </text>
        )}
      </svg>
    </figure>
  );
}
