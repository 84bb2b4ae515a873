/**
 * The "Run as training job" form's values → a `POST jobs` body. The export's `parameters`
 * ({name: {type, default}}) say how to read each text field. Pure.
 */
import { IExportParameter, IJobRequest } from './tokens';

/** The form as the user filled it in: every value as typed (checkboxes as booleans). */
export interface IJobForm {
  path: string;
  /** Copy the running kernel's container (its image, mounts, env): send `kernel_id`. */
  kernelId?: string | null;
  /** Else this image ('' = the server's default image). */
  image?: string;
  /** Number of GPUs; 0 = none. */
  gpus: number | string;
  /** Parameter name → text (or boolean for bool parameters). */
  values: { [name: string]: string | boolean };
  /** Minutes; '' or 0 = no limit. */
  timeoutMinutes?: number | string;
}

/**
 * A parameter as `POST exports` describes it: `cell` is the cell it is assigned in; `inferred`
 * when no cell is tagged "parameters" and the notebook's top-level assignments of literal values
 * (`max_steps = 200000`) are the parameters.
 */
export interface IParameterInfo extends IExportParameter {
  cell?: number | null;
  inferred?: boolean;
}

/** Are these the notebook's top-level assignments (no cell is tagged "parameters")? */
export function parametersInferred(parameters: {
  [name: string]: IParameterInfo;
}): boolean {
  return Object.values(parameters).some(p => !!p.inferred);
}

/**
 * Where the parameters come from, in a sentence (the job form and the export dialog show it):
 * the parameters cell, the top-level assignments when no cell is tagged, or that there are none.
 */
export function parametersSource(parameters: {
  [name: string]: IParameterInfo;
}): string {
  const params = Object.values(parameters);
  if (!params.length) {
    return 'The notebook has no parameters: tag a cell "parameters", or assign values at the top level of a cell (epochs = 3), to get one field per variable.';
  }
  if (parametersInferred(parameters)) {
    return 'No cell is tagged "parameters", so these are the notebook\'s top-level assignments of literal values; a value here replaces the assignment\'s.';
  }
  const cell = params[0].cell;
  return cell ? `From the parameters cell (cell ${cell}).` : '';
}

/** A field's hint: the parameter's type, and the cell it is assigned in when inferred. */
export function parameterHint(param: IParameterInfo): string {
  return param.inferred && param.cell
    ? `${param.type}, cell ${param.cell}`
    : param.type;
}

/** A parameter's default as the form shows it. */
export function defaultText(param: IExportParameter): string | boolean {
  if (param.type === 'bool') {
    return Boolean(param.default);
  }
  if (param.type === 'str') {
    return param.default === null || param.default === undefined
      ? ''
      : String(param.default);
  }
  return param.default === undefined ? '' : JSON.stringify(param.default);
}

/**
 * Read one field. Throws an Error naming the parameter when the text does not fit its type.
 */
export function parseValue(
  name: string,
  param: IExportParameter,
  text: string | boolean
): unknown {
  if (param.type === 'bool') {
    if (typeof text === 'boolean') {
      return text;
    }
    const t = text.trim().toLowerCase();
    if (['true', 'yes', '1'].includes(t)) {
      return true;
    }
    if (['false', 'no', '0'].includes(t)) {
      return false;
    }
    throw new Error(`${name}: expected true or false, got "${text}"`);
  }
  const value = String(text);
  switch (param.type) {
    case 'int': {
      const t = value.trim();
      if (!/^[-+]?\d+$/.test(t)) {
        throw new Error(`${name}: expected a whole number, got "${value}"`);
      }
      return parseInt(t, 10);
    }
    case 'float': {
      const t = value.trim();
      const n = Number(t);
      if (t === '' || !isFinite(n)) {
        throw new Error(`${name}: expected a number, got "${value}"`);
      }
      return n;
    }
    case 'str':
      return value;
    default: {
      // json (lists, dicts, None...): JSON text; a parameter whose default is None also
      // takes plain text, like the exported script's flag does.
      try {
        return JSON.parse(value);
      } catch {
        if (param.default === null) {
          return value;
        }
        throw new Error(
          `${name}: expected JSON (e.g. [64, 32]), got "${value}"`
        );
      }
    }
  }
}

/** Deep equality for JSON values. */
function sameJSON(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The `POST jobs` body. Only parameters whose value differs from the notebook's default are
 * sent (the job's record then shows what was changed). Throws an Error listing every bad field.
 */
export function buildJobRequest(
  form: IJobForm,
  parameters: { [name: string]: IExportParameter }
): IJobRequest {
  const errors: string[] = [];
  const params: { [name: string]: unknown } = {};
  for (const [name, param] of Object.entries(parameters)) {
    if (!(name in form.values)) {
      continue;
    }
    try {
      const value = parseValue(name, param, form.values[name]);
      if (!sameJSON(value, param.default)) {
        params[name] = value;
      }
    } catch (error) {
      errors.push((error as Error).message);
    }
  }
  const gpuText = String(form.gpus).trim();
  let gpus: string | number = 'none';
  if (gpuText === 'all') {
    gpus = 'all';
  } else if (!/^\d+$/.test(gpuText)) {
    errors.push(`GPUs: expected a number (0 for none), got "${form.gpus}"`);
  } else if (parseInt(gpuText, 10) > 0) {
    gpus = parseInt(gpuText, 10);
  }
  let timeout: number | undefined;
  const timeoutText = String(form.timeoutMinutes ?? '').trim();
  if (timeoutText !== '' && timeoutText !== '0') {
    const minutes = Number(timeoutText);
    if (!isFinite(minutes) || minutes <= 0) {
      errors.push(`Time limit: expected minutes, got "${form.timeoutMinutes}"`);
    } else {
      timeout = minutes * 60;
    }
  }
  if (errors.length) {
    throw new Error(errors.join('\n'));
  }
  const request: IJobRequest = { path: form.path, gpus, params };
  if (form.kernelId) {
    request.kernel_id = form.kernelId;
  } else if (form.image && form.image.trim()) {
    request.image = form.image.trim();
  }
  if (timeout !== undefined) {
    request.timeout = timeout;
  }
  return request;
}
