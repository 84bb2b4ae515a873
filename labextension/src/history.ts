/**
 * Client-side GPU history: the panel asks `GET gpus?since=<last t>` and appends what is new, so
 * each poll carries a few points instead of the whole server-side history.
 */
import { History, IHistorySeries } from './tokens';

const COLUMNS: Array<keyof IHistorySeries> = [
  't',
  'util',
  'mem_used',
  'temp',
  'power'
];

function emptySeries(): IHistorySeries {
  return { t: [], util: [], mem_used: [], temp: [], power: [] };
}

/** The latest sample time across all GPUs, or null when there is none. */
export function lastTime(history: History): number | null {
  let last: number | null = null;
  for (const series of Object.values(history)) {
    const t = series.t[series.t.length - 1];
    if (t !== undefined && (last === null || t > last)) {
      last = t;
    }
  }
  return last;
}

/** Keep the rows of `series` from index `start` on. */
function sliceSeries(series: IHistorySeries, start: number): IHistorySeries {
  const out = emptySeries();
  for (const key of COLUMNS) {
    (out[key] as unknown[]) = (series[key] as unknown[]).slice(start);
  }
  return out;
}

/**
 * Append the points of `incoming` newer than those of `previous` (per GPU), then keep only the
 * last `windowSeconds` (relative to the newest point, in the server's clock) and at most
 * `maxPoints` points per GPU. GPUs absent from `incoming` keep their points. Pure.
 */
export function mergeHistory(
  previous: History,
  incoming: History,
  windowSeconds: number,
  maxPoints: number
): History {
  const merged: History = {};
  const uuids = new Set([...Object.keys(previous), ...Object.keys(incoming)]);
  for (const uuid of uuids) {
    const old = previous[uuid] ?? emptySeries();
    const add = incoming[uuid];
    const series = sliceSeries(old, 0);
    if (add && add.t) {
      const oldLast = old.t.length ? old.t[old.t.length - 1] : -Infinity;
      for (let i = 0; i < add.t.length; i++) {
        if (add.t[i] > oldLast) {
          for (const key of COLUMNS) {
            const column = add[key] as unknown[] | undefined;
            (series[key] as unknown[]).push(
              column ? (column[i] ?? null) : null
            );
          }
        }
      }
    }
    merged[uuid] = series;
  }
  const newest = lastTime(merged);
  for (const uuid of Object.keys(merged)) {
    const series = merged[uuid];
    let start = 0;
    if (newest !== null && windowSeconds > 0) {
      const cutoff = newest - windowSeconds;
      while (start < series.t.length && series.t[start] < cutoff) {
        start++;
      }
    }
    start = Math.max(start, series.t.length - maxPoints);
    merged[uuid] = start > 0 ? sliceSeries(series, start) : series;
  }
  return merged;
}
