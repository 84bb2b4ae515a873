/**
 * UI tests against three real Jupyter servers with the jupyter_ptcuda server extension:
 *  - gpu (port 8888): fake NVML with two GPUs, the real Docker engine (health checks, jobs);
 *  - binder (8889): no NVIDIA driver and no Docker engine, as on mybinder.org;
 *  - noext (8890): the server extension disabled.
 * Browser: Debian's Chromium (/usr/bin/chromium); no browser download, no video.
 */
const path = require('path');
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

process.env.TMPDIR = process.env.TMPDIR || path.join(__dirname, '.tmp');
require('fs').mkdirSync(process.env.TMPDIR, { recursive: true });

const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
];

/** A test server; its log is .tmp/<name>.log. */
function server(name, port, env) {
  return {
    command: `exec jupyter lab --config jupyter_server_test_config.py --port=${port} --ServerApp.ip=127.0.0.1 > .tmp/${name}.log 2>&1`,
    url: `http://127.0.0.1:${port}/lab`,
    timeout: 120 * 1000,
    reuseExistingServer: false,
    gracefulShutdown: { signal: 'SIGTERM', timeout: 15000 },
    env: { PTCUDA_UI_NAME: name, ...env }
  };
}

module.exports = {
  ...baseConfig,
  reporter: [[process.env.CI ? 'line' : 'list'], ['html', { open: 'never' }]],
  outputDir: 'test-results/artifacts',
  timeout: 240 * 1000,
  expect: { timeout: 30 * 1000 },
  workers: 1,
  retries: 0,
  use: {
    ...baseConfig.use,
    browserName: 'chromium',
    launchOptions: { executablePath: '/usr/bin/chromium', args: chromiumArgs },
    video: 'off',
    trace: 'retain-on-failure',
    viewport: { width: 1400, height: 900 }
  },
  projects: [
    { name: 'gpu', testMatch: ['gpu.spec.ts', 'terminal.spec.ts', 'firsthour.spec.ts', 'runs.spec.ts', 'queue.spec.ts'], use: { baseURL: 'http://127.0.0.1:8888' } },
    { name: 'binder', testMatch: 'binder.spec.ts', use: { baseURL: 'http://127.0.0.1:8889' } },
    { name: 'noext', testMatch: 'noext.spec.ts', use: { baseURL: 'http://127.0.0.1:8890' } }
  ],
  webServer: [
    server('gpu', 8888, { PTCUDA_UI_NVML: 'fake:2' }),
    server('binder', 8889, {
      PTCUDA_UI_NVML: 'fake:library_not_found',
      DOCKER_HOST: 'unix:///nonexistent/docker.sock'
    }),
    server('noext', 8890, { PTCUDA_UI_DISABLE_EXTENSION: '1' })
  ]
};
