import { test, expect } from '@playwright/test';
import { ADMIN_PASSWORD, browserErrors, clusters, hydrated, ok, signIn, userPage } from './helpers';

const PASSWORD = 'endpoint-user-password-1';

test('a data scientist deploys an approved version, invokes it from the test page and sees the invocations counted', async ({ page, browser }) => {
  test.setTimeout(240_000);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await ok(await page.request.post('/api/v1/users', { data: { username: 'esme', password: PASSWORD, policies: ['DataScientist'] } }));
  await ok(await page.request.post('/api/v1/users', { data: { username: 'rufus', password: PASSWORD, policies: ['Reviewer'] } }));
  await ok(await page.request.post('/api/v1/users', { data: { username: 'odile', password: PASSWORD, policies: ['ReadOnly'] } }));

  // Setup through the API (the registry and training pages have their own tests):
  // Esme trains and registers a model, Rufus approves it.
  const esme = await userPage(browser, 'esme', PASSWORD);
  const errors = browserErrors(esme);
  const upload = await ok(await esme.request.post('/api/v1/artifacts?name=sides.csv', { data: Buffer.from(clusters(200, 5, ['east', 'west'])) }));
  await ok(await esme.request.post('/api/v1/training-jobs', {
    data: {
      name: 'ui-sides-1',
      spec: {
        algorithm: { type: 'builtin', name: 'tabular' },
        hyperparameters: { epochs: '12', batch_size: '32' },
        channels: [{ name: 'train', artifacts: [upload.id] }],
      },
    },
  }));
  await expect.poll(async () => (await (await esme.request.get('/api/v1/training-jobs/ui-sides-1')).json()).job.state, { timeout: 120_000 }).toBe('Completed');
  await ok(await esme.request.post('/api/v1/model-groups', { data: { name: 'ui-sides' } }));
  await ok(await esme.request.post('/api/v1/model-groups/ui-sides/versions', { data: { training_job: 'ui-sides-1' } }));

  // Before approval there is nothing to deploy.
  await esme.getByRole('link', { name: 'Endpoints' }).click();
  await hydrated(esme);
  await expect(esme.getByTestId('no-approved')).toBeVisible();
  const rufus = await userPage(browser, 'rufus', PASSWORD);
  await ok(await rufus.request.post('/api/v1/model-groups/ui-sides/versions/1/approval', { data: { status: 'Approved' } }));

  // Esme deploys it from the Endpoints page.
  await esme.reload();
  await hydrated(esme);
  const form = esme.getByTestId('new-endpoint');
  await form.getByLabel('Endpoint name').fill('ui-sides');
  await form.getByLabel('Approved model version').selectOption('ui-sides:1');
  await form.getByRole('button', { name: 'Create endpoint' }).click();
  await expect(esme).toHaveURL(/\/endpoints\/ui-sides$/);
  await hydrated(esme);
  // The page follows the deployment live: the local agent starts the model server.
  await expect(esme.getByTestId('endpoint-status')).toHaveText('InService', { timeout: 60_000 });
  await expect(esme.getByTestId('variants').getByTestId('healthy')).toHaveText('1/1');
  await expect(esme.getByTestId('endpoint-events')).toContainText('in service');

  // Capture every request from now on.
  const capture = esme.getByTestId('capture-form');
  await capture.getByLabel('Capture %').fill('100');
  await capture.getByRole('button', { name: 'Set data capture' }).click();
  await expect(esme.getByTestId('capture-status')).toContainText('100% of invocations');

  // A test request from the page: a point far on the east side.
  const request = esme.getByTestId('test-request');
  await request.getByLabel('Body').fill('{"instances": [{"x1": 0.9, "x2": 0.8}]}');
  await request.getByRole('button', { name: 'Send request' }).click();
  await expect(esme.getByTestId('test-status')).toHaveText('200');
  await expect(esme.getByTestId('test-body-out')).toContainText('"label":"east"');
  // A malformed body gets the model's own complaint.
  await request.getByLabel('Body').fill('{"instances": "oops"}');
  await request.getByRole('button', { name: 'Send request' }).click();
  await expect(esme.getByTestId('test-status')).toHaveText('400');
  await expect(esme.getByTestId('test-body-out')).toContainText('instances');

  // The monitoring section counts them (metrics are stored every few seconds and the
  // page refreshes itself), and draws the charts.
  await expect(esme.getByTestId('invocation-total')).toHaveText('2', { timeout: 30_000 });
  await expect(esme.getByTestId('endpoint-charts').locator('svg')).toHaveCount(3);
  await expect(esme.getByTestId('endpoint-charts')).toContainText('milliseconds');
  // A custom window: one that ended an hour ago holds none of them; a backwards one
  // is refused.
  await esme.getByLabel('Range').selectOption('custom');
  const custom = esme.getByTestId('custom-range');
  await custom.getByLabel('From (hours ago)').fill('1');
  await custom.getByLabel('To (hours ago)').fill('2');
  await custom.getByRole('button', { name: 'Show' }).click();
  await expect(custom).toContainText('From must be more hours ago than To');
  await custom.getByLabel('From (hours ago)').fill('2');
  await custom.getByLabel('To (hours ago)').fill('1');
  await custom.getByRole('button', { name: 'Show' }).click();
  await expect(esme.getByTestId('invocation-total')).toHaveText('0');
  await custom.getByLabel('To (hours ago)').fill('0');
  await custom.getByRole('button', { name: 'Show' }).click();
  await expect(esme.getByTestId('invocation-total')).toHaveText('2');

  // The model monitor: a baseline from the training data, then a run over what was
  // captured.
  await expect(esme.getByTestId('capture-status')).toContainText('2 records', { timeout: 30_000 });
  const monitor = esme.getByTestId('monitor-form');
  await monitor.getByLabel('Runs').selectOption('manual');
  await monitor.getByRole('button', { name: 'Set up model monitor' }).click();
  await expect(esme.getByTestId('baseline')).toContainText('x1');
  await expect(esme.getByTestId('baseline')).toContainText('x2');
  await esme.getByRole('button', { name: 'Run monitor now' }).click();
  await expect(esme.getByTestId('monitor-runs')).toContainText('Completed');
  await expect(esme.getByTestId('drift-report').locator('tr[data-feature="x1"]')).toBeVisible();

  // An alarm on 4xx answers, shown with its state.
  const alarm = esme.getByTestId('alarm-form');
  await alarm.getByLabel('Name').fill('client-errors');
  await alarm.getByLabel('Metric').selectOption('errors_4xx');
  await alarm.getByLabel('Threshold').fill('5');
  await alarm.getByRole('button', { name: 'Add alarm' }).click();
  await expect(esme.getByTestId('alarms').locator('tr[data-alarm="client-errors"]').getByTestId('alarm-state')).toHaveText('INSUFFICIENT_DATA');

  // Autoscaling for the variant, shown in the variants table; the node serving it is
  // charted beside the endpoint's own metrics.
  const scaling = esme.getByTestId('autoscaling-form');
  await scaling.locator('summary').click();
  await scaling.getByLabel('Maximum instances').fill('2');
  await scaling.getByLabel('Target invocations per instance and minute').fill('600');
  await scaling.getByRole('button', { name: 'Save policy' }).click();
  await expect(esme.getByTestId('variants').getByTestId('autoscaling')).toHaveText('1-2 instances, 600 invocations/min per instance');
  await expect(esme.getByTestId('endpoint-events')).toContainText('autoscaling of variant primary set by esme');
  await expect(esme.locator('[data-testid="node-chart"][data-node="local"] svg')).toBeVisible();

  // The model group's deployment rule points at the endpoint.
  await esme.goto('/models/ui-sides');
  await hydrated(esme);
  await expect(esme.getByTestId('deployment-rule')).toContainText('approved versions are deployed by hand');
  const rule = esme.getByTestId('deployment-rule-form');
  await rule.getByLabel('Deploy approved versions to').selectOption('ui-sides');
  await rule.getByRole('button', { name: 'Save rule' }).click();
  await expect(esme.getByTestId('deployment-rule')).toContainText('deployed to endpoint ui-sides');
  expect((await (await esme.request.get('/api/v1/model-groups/ui-sides/deployment-rule')).json()).endpoint).toBe('ui-sides');
  // The page hydrated and ran without a browser error.
  expect(errors, errors.join('\n')).toEqual([]);

  // A read-only user may look but not deploy or invoke.
  const odile = await userPage(browser, 'odile', PASSWORD);
  await odile.goto('/endpoints/ui-sides');
  await hydrated(odile);
  await expect(odile.getByTestId('endpoint-status')).toHaveText('InService');
  await expect(odile.getByTestId('update-endpoint')).toHaveCount(0);
  const refused = await odile.request.post('/endpoints/ui-sides/invocations', { data: { instances: [] } });
  expect(refused.status()).toBe(403);
});
