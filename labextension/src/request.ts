import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The server extension's URL namespace, under the server's base URL. */
export const API_NAMESPACE = 'jupyter-ptcuda';

/**
 * An error reply of the jupyter-ptcuda REST API (JSON `{message, reason}`), or a failure to
 * reach it. `missing` is true when the routes do not exist at all: the server extension is not
 * installed or not enabled (jupyter_server answers 404 with its HTML page).
 */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string | null = null,
    readonly missing = false
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The Docker engine is not there or does not answer (503 EngineUnavailable). */
  get engineUnavailable(): boolean {
    return this.reason === 'EngineUnavailable';
  }
}

/** What the panel says when the REST API is not there. */
export const MISSING_EXTENSION_MESSAGE =
  'The jupyter-ptcuda server extension is not running in this Jupyter server ' +
  '(its REST API answers 404). Install the Python package in the environment that runs ' +
  'the server (pip install jupyter-ptcuda), check `jupyter server extension list` shows ' +
  'jupyter_ptcuda enabled, then restart the server.';

/**
 * Make a request to the server extension and return the raw response; throw an
 * {@link ApiError} for a network failure or a non-2xx reply.
 *
 * @param endPoint path under `{base_url}jupyter-ptcuda/`, with its query string
 * @param init fetch options (method, body...)
 * @param settings the server connection settings (default: the page's)
 */
export async function requestRaw(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<Response> {
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(
      `Cannot reach the Jupyter server: ${(error as Error).message ?? error}`,
      0,
      'NetworkError'
    );
  }
  if (!response.ok) {
    throw await errorFromResponse(response);
  }
  return response;
}

/**
 * Call the server extension and return the reply as JSON (null for an empty body).
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings?: ServerConnection.ISettings
): Promise<T> {
  const response = await requestRaw(endPoint, init, settings);
  const text = await response.text();
  if (!text) {
    return null as unknown as T;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(
      `The server sent a reply that is not JSON for ${endPoint}`,
      response.status,
      'BadReply'
    );
  }
}

/** POST a JSON body. */
export function postJSON<T>(
  endPoint: string,
  body: unknown,
  settings?: ServerConnection.ISettings
): Promise<T> {
  return requestAPI<T>(
    endPoint,
    { method: 'POST', body: JSON.stringify(body) },
    settings
  );
}

/** An {@link ApiError} from a failed reply: our JSON `{message, reason}` or anything else. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // ignore: no body
  }
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (data && typeof data === 'object' && typeof data.message === 'string') {
    return new ApiError(data.message, response.status, data.reason ?? null);
  }
  if (response.status === 404) {
    return new ApiError(MISSING_EXTENSION_MESSAGE, 404, 'NotFound', true);
  }
  return new ApiError(
    `The server answered ${response.status} ${response.statusText || ''}`.trim(),
    response.status,
    null
  );
}

/** A message for any error thrown by the helpers above (or anything else). */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}
