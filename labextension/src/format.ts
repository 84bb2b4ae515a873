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

/** How long something has waited, to the second: "8 s", "1 min 05 s", "2 h 03 min". */
export function formatWaited(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '';
  }
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  }
  const m = Math.floor(s / 60);
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** What a queued request asks for: `count:2` → "2 GPUs", `1` → "GPU 1", `0,1` → "GPUs 0, 1". */
export function formatGpuAsk(gpus: string | null | undefined): string {
  if (!gpus) {
    return '';
  }
  const count = /^count:(\d+)$/.exec(gpus);
  if (count) {
    return Number(count[1]) === 1 ? '1 GPU' : `${count[1]} GPUs`;
  }
  const ids = gpus.split(',').map(g => g.trim());
  return ids.length === 1 ? `GPU ${ids[0]}` : `GPUs ${ids.join(', ')}`;
}

/** A place in the GPU queue (1: next) as its user reads it: "next in line", "2 ahead of you". */
export function formatPlace(place: number | null | undefined): string {
  if (place === null || place === undefined || !isFinite(place)) {
    return '';
  }
  return place <= 1 ? 'next in line' : `${place - 1} ahead of you`;
}
