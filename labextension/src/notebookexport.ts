/** `POST exports`: a notebook (path relative to the server root) to a plain train.py. */
import { ServerConnection } from '@jupyterlab/services';

import { postJSON } from './request';
import { IExportResult } from './tokens';

export interface IExportOptions {
  /** Also write `<stem>.train.py` next to the notebook (the reply says where: `saved_path`). */
  save?: boolean;
  /** Turn what the strict export refuses into warnings. */
  lenient?: boolean;
}

export function exportNotebook(
  path: string,
  options: IExportOptions = {},
  settings?: ServerConnection.ISettings
): Promise<IExportResult> {
  return postJSON<IExportResult>(
    'exports',
    { path, save: !!options.save, lenient: !!options.lenient },
    settings
  );
}
