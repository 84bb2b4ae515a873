/**
 * A fake of `ServerConnection.makeRequest` for the model tests: routes (method + path without
 * the query) answer canned replies; every request is recorded.
 */
import { ServerConnection } from '@jupyterlab/services';

export interface IFakeReply {
  status?: number;
  body?: unknown;
  /** Raw bytes (for the job log). */
  bytes?: Uint8Array;
  headers?: { [name: string]: string };
  contentType?: string;
}

type Handler = IFakeReply | ((url: URL, init: RequestInit) => IFakeReply);

export class FakeServer {
  readonly settings = ServerConnection.makeSettings({
    baseUrl: 'http://localhost:8888/'
  });
  readonly requests: Array<{ method: string; url: URL; body: unknown }> = [];
  private _routes = new Map<string, Handler[]>();
  private _spy: jest.SpyInstance;

  constructor() {
    this._spy = jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockImplementation(async (url: string, init: RequestInit) =>
        this._answer(url, init)
      );
  }

  /** Answer `method path` (path under /jupyter-ptcuda/) with these replies in turn; the last one repeats. */
  on(method: string, path: string, ...replies: Handler[]): this {
    this._routes.set(`${method} ${path}`, replies);
    return this;
  }

  restore(): void {
    this._spy.mockRestore();
  }

  private _answer(raw: string, init: RequestInit): any {
    const url = new URL(raw);
    const method = (init.method ?? 'GET').toUpperCase();
    const path = url.pathname.replace(/^\/jupyter-ptcuda\//, '');
    this.requests.push({
      method,
      url,
      body: init.body ? JSON.parse(String(init.body)) : undefined
    });
    const replies = this._routes.get(`${method} ${path}`);
    let reply: IFakeReply;
    if (!replies) {
      reply = {
        status: 404,
        body: '<html>404: Not Found</html>',
        contentType: 'text/html'
      };
    } else {
      const handler = replies.length > 1 ? replies.shift()! : replies[0];
      reply = typeof handler === 'function' ? handler(url, init) : handler;
    }
    return fakeResponse(reply);
  }
}

export function fakeResponse(reply: IFakeReply): any {
  const status = reply.status ?? 200;
  const text =
    reply.bytes !== undefined
      ? new TextDecoder().decode(reply.bytes)
      : typeof reply.body === 'string'
        ? reply.body
        : reply.body === undefined
          ? ''
          : JSON.stringify(reply.body);
  const bytes = reply.bytes ?? new TextEncoder().encode(text);
  const headers = new Map(
    Object.entries(reply.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])
  );
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: '',
    headers: { get: (name: string) => headers.get(name.toLowerCase()) ?? null },
    text: async () => text,
    arrayBuffer: async () =>
      bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)
  };
}

/** A `GET gpus` reply with `n` GPUs and history points at times `times`. */
export function gpusReply(options: {
  state?: 'ok' | 'unavailable' | 'starting';
  reason?: string;
  gpus?: number;
  times?: number[];
  holders?: {
    [index: number]: Array<{
      kind: 'kernel' | 'job';
      id: string;
      notebook?: string;
    }>;
  };
  processes?: {
    [index: number]: Array<{
      pid: number;
      used_memory: number;
      owner?: string;
      kind?: string;
    }>;
  };
}): any {
  const n = options.state === 'unavailable' ? 0 : (options.gpus ?? 2);
  const times = options.times ?? [100, 101];
  const gpus = Array.from({ length: n }, (_, i) => ({
    index: i,
    uuid: `GPU-${i}`,
    name: 'NVIDIA H100 80GB HBM3',
    state: 'ok',
    utilization_gpu: 50 + i,
    memory_used: 10 * 1024 ** 3,
    memory_total: 80 * 1024 ** 3,
    temperature_c: 60,
    power_w: 300,
    power_limit_w: 700,
    processes: options.processes?.[i] ?? [],
    holders: options.holders?.[i] ?? []
  }));
  const history: any = {};
  for (const g of gpus) {
    history[g.uuid] = {
      t: times,
      util: times.map(() => g.utilization_gpu),
      mem_used: times.map(() => g.memory_used),
      temp: times.map(() => 60),
      power: times.map(() => 300)
    };
  }
  return {
    snapshot: {
      state: options.state ?? 'ok',
      reason: options.reason ?? null,
      driver_version: '550.54.15',
      cuda_driver_version: '12.4',
      interval: 1,
      sampled_at: times[times.length - 1] ?? null,
      gpus
    },
    history
  };
}
