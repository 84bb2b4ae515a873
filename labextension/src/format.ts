/** Formatting helpers shared by the widgets. Pure. */

const GIB = 1024 ** 3;

/** Bytes as GiB with one decimal ("41.2 GiB"), or MiB below 1 GiB. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes)) {
    return '–';
  }
  if (bytes >= GIB) {
    return `${(bytes / GIB).toFixed(1)} GiB`;
  }
  return `${Math.round(bytes / 1024 ** 2)} MiB`;
}

/** "used / total GiB". */
export function formatMemory(
  used: number | null | undefined,
  total: number | null | undefined
): string {
  if (used === null || used === undefined) {
    return '–';
  }
  if (total === null || total === undefined || total <= 0) {
    return formatBytes(used);
  }
  return `${(used / GIB).toFixed(1)} / ${(total / GIB).toFixed(1)} GiB`;
}

/** A number with a unit, or "–" when unknown. */
export function formatValue(
  value: number | null | undefined,
  unit: string,
  digits = 0
): string {
  if (value === null || value === undefined || !isFinite(value)) {
    return '–';
  }
  return `${value.toFixed(digits)}${unit}`;
}

/** Any JSON value of a health check as short text. */
export function formatCheckValue(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  if (typeof value === 'string') {
    return value;
  }
  return JSON.stringify(value);
}

/** Seconds as "1m 05s" / "12.3 s". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '';
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds - m * 60);
  return `${m}m ${s.toString().padStart(2, '0')}s`;
}

/** Signals a job's exit code can stand for (128 + signal number). */
const SIGNALS: { [code: number]: string } = {
  130: 'SIGINT',
  137: 'SIGKILL',
  143: 'SIGTERM'
};

/**
 * A job's exit code with what ended it: "143 (SIGTERM, by you)" for a job cancelled from the Jobs view,
 * "137 (SIGKILL, time limit)" for one past its timeout, "137 (SIGKILL: out of memory)" for OOMKilled.
 */
export function formatExit(job: {
  state: string;
  exit_code?: number | null;
  reason?: string | null;
}): string {
  const code = job.exit_code;
  if (code === null || code === undefined) {
    return '';
  }
  const signal = SIGNALS[code];
  if (!signal) {
    return String(code);
  }
  if (job.state === 'cancelled') {
    return `${code} (${signal}, by you)`;
  }
  if (job.state === 'timed_out') {
    return `${code} (${signal}, time limit)`;
  }
  if (job.reason === 'OOMKilled') {
    return `${code} (${signal}: out of memory)`;
  }
  return `${code} (${signal})`;
}
