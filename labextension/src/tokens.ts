/**
 * Types of the jupyter-ptcuda REST API (jupyter_ptcuda/server/openapi.yaml) and the tokens
 * this extension provides.
 */
import { Token } from '@lumino/coreutils';
import { ISignal } from '@lumino/signaling';

/**
 * Who holds a GPU: a kernel or job container, or a claim being started. Under the JupyterHub
 * broker, another user's holder is `{kind: 'other', owner: 'another user', id: ''}`: never named.
 */
export interface IHolder {
  kind: 'kernel' | 'job' | 'starting' | 'other';
  id: string;
  container?: string;
  notebook?: string;
  owner?: string;
}

/** A process NVML sees on a GPU, attributed to our containers where possible. */
export interface IGpuProcess {
  pid: number;
  used_memory?: number | null;
  container?: string | null;
  kind?: string;
  owner?: string;
  notebook?: string | null;
}

/** One GPU in the snapshot. Any metric may be null (not supported by the device). */
export interface IGpu {
  index: number;
  uuid?: string | null;
  name: string | null;
  state: 'ok' | 'lost' | 'error';
  mig_mode?: string | null;
  compute_capability?: string | null;
  utilization_gpu?: number | null;
  utilization_memory?: number | null;
  memory_used?: number | null;
  memory_total?: number | null;
  temperature_c?: number | null;
  power_w?: number | null;
  power_limit_w?: number | null;
  clock_sm_mhz?: number | null;
  clock_mem_mhz?: number | null;
  throttle_reasons?: string[] | null;
  ecc_volatile_uncorrected?: number | null;
  processes?: IGpuProcess[] | null;
  holders?: IHolder[];
}

/** `snapshot` of `GET gpus`. */
export interface ISnapshot {
  state: 'starting' | 'ok' | 'unavailable';
  reason?: string | null;
  driver_version?: string | null;
  cuda_driver_version?: string | null;
  interval?: number;
  sampled_at?: number | null;
  gpus: IGpu[];
}

/** History columns of one GPU, oldest first (`t` in epoch seconds of the server). */
export interface IHistorySeries {
  t: number[];
  util: Array<number | null>;
  mem_used: Array<number | null>;
  temp: Array<number | null>;
  power: Array<number | null>;
}

/** GPU uuid → history columns. */
export type History = { [uuid: string]: IHistorySeries };

/** `GET gpus`. */
export interface IGpusReply {
  snapshot: ISnapshot;
  history: History;
}

/** One entry of `GET kernels`. */
export interface IKernelInfo {
  kernel_id: string;
  name?: string | null;
  execution_state?: string | null;
  notebook?: string | null;
  container_id?: string | null;
  image?: string | null;
  /** Device indexes the kernel can use (every GPU for a kernel with `gpus: "all"`). */
  gpus: string[];
  /** The request as labelled: `none`, `all`, `count:N` or ids `0,1`. */
  gpu_request?: string;
  in_container: boolean;
}

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

/** One check of a health report. */
export interface ICheck {
  id: string;
  title: string;
  status: CheckStatus;
  value?: unknown;
  threshold?: unknown;
  remediation?: string | null;
  detail?: string | null;
}

/** A health report (schema 1). */
export interface IReport {
  schema: 1;
  summary: 'pass' | 'warn' | 'fail';
  checks: ICheck[];
  cuda: {
    available?: boolean;
    reason_code?: string | null;
    reason?: string | null;
    /** The user chose no GPU (gpus: none): not a failure of the check. */
    chosen?: boolean;
  };
  versions?: { [key: string]: string | null };
  notes?: string[];
  target?: { [key: string]: unknown };
  duration_s?: number;
}

/** An error as the API reports it. */
export interface IApiErrorBody {
  message: string;
  reason?: string | null;
}

/** A health check (`POST health`, `GET health/<id>`). */
export interface IHealth {
  id: string;
  state: 'running' | 'done' | 'error';
  created: number;
  finished?: number | null;
  target: {
    image?: string;
    kernel_id?: string;
    /** The notebook of the kernel checked (its session's path when the check started). */
    notebook?: string | null;
    [key: string]: unknown;
  };
  report?: IReport | null;
  error?: IApiErrorBody | null;
}

/** What to check: exactly one of image or kernel_id. */
export interface IHealthRequest {
  image?: string;
  kernel_id?: string;
  gpus?: string | number | string[];
  perf?: boolean;
}

export type JobState =
  'queued' | 'running' | 'completed' | 'failed' | 'cancelled' | 'timed_out';

/** A batch job (`GET jobs`); more fields may be present. */
export interface IJob {
  id: string;
  state: JobState;
  exit_code?: number | null;
  reason?: string | null;
  name?: string;
  image?: string;
  gpus?: string;
  parameters?: { [name: string]: unknown };
  created?: string | null;
  started?: string | null;
  finished?: string | null;
  duration_s?: number | null;
  notebook_path?: string | null;
  script_path?: string | null;
  output_path?: string | null;
  cancel_requested?: boolean;
  /** While it waits for GPUs: its place in the GPU queue (1: next); else null. */
  place?: number | null;
  /** Seconds from submit to start (so far, while it is queued). */
  waited_s?: number | null;
  [key: string]: unknown;
}

/**
 * One request waiting in the GPU queue (`GET queue`): the user's own are named ("job train-lr0.1",
 * "kernel Untitled.ipynb") with an id and a reason; another user's are "another user", without either.
 */
export interface IQueueEntry {
  id?: string | null;
  what: string;
  /** 1: next. */
  place: number;
  reason?: string | null;
  waited_s: number;
  /** What it asks for: `count:N` or device ids `0,1`. */
  gpus: string;
}

/** `GET queue`. */
export interface IQueueReply {
  enabled: boolean;
  waiting: IQueueEntry[];
}

/** `POST jobs`. */
export interface IJobRequest {
  path: string;
  kernel_id?: string;
  image?: string;
  gpus?: string | number;
  params?: { [name: string]: unknown };
  timeout?: number;
  name?: string;
}

/** A parameter of an exported notebook (its `parameters` cell). */
export interface IExportParameter {
  type: string;
  default: unknown;
}

/** One line of the export report: what was rewritten and how. */
export interface IExportReportItem {
  cell?: number;
  kind?: string;
  source?: string;
  action?: string;
  [key: string]: unknown;
}

/** `POST exports`. */
export interface IExportResult {
  script: string;
  report: IExportReportItem[];
  name?: string;
  notebook_sha256?: string;
  requirements?: string[];
  parameters?: { [name: string]: IExportParameter };
  warnings?: string[];
  saved_path?: string;
}

/**
 * Where the GPU monitor stands:
 * - `loading`: no answer yet (or the sampler is starting);
 * - `ok`: GPUs are listed;
 * - `unavailable`: the host has no usable NVIDIA driver (see `reason`);
 * - `missing`: the server extension is not there (404 on its API);
 * - `error`: the last request failed (see `error`).
 */
export type MonitorStatus =
  'loading' | 'ok' | 'unavailable' | 'missing' | 'error';

/** The GPU monitor other plugins can read (the panel and the status bar use it). */
export interface IGpuMonitor {
  readonly status: MonitorStatus;
  readonly snapshot: ISnapshot | null;
  readonly history: History;
  readonly kernels: IKernelInfo[];
  /** The GPU queue (`GET queue`, read while the panel is shown), in order; [] when nothing waits. */
  readonly queue: IQueueEntry[];
  /** The last error's message (status `error` or `missing`), else ''. */
  readonly error: string;
  /** Emitted after every refresh (and on status changes). */
  readonly changed: ISignal<IGpuMonitor, void>;
  /** Ask for a refresh now. */
  refresh(): Promise<void>;
}

export const IGpuMonitor = new Token<IGpuMonitor>(
  'jupyter-ptcuda:IGpuMonitor',
  'GPU snapshot, history and kernels of the jupyter-ptcuda server extension.'
);
