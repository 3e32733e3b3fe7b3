import { test, expect } from '@playwright/test';
import { ADMIN_PASSWORD, clusters, hydrated, signIn } from './helpers';

test('the local agent is a Ready compute node', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Compute' }).click();
  await hydrated(page);
  const local = page.locator('section[data-node="local"]');
  await expect(local.getByTestId('node-status')).toHaveText('Ready');
  await expect(local.getByTestId('node-gpus')).toContainText('none (CPU node)');
  await expect(local.locator('.chart svg')).toBeVisible();

  // Adding a node shows the command to run on it.
  await page.getByLabel('Node name').fill('gpu-box-1');
  await page.getByRole('button', { name: 'Create node token' }).click();
  await expect(page.getByTestId('agent-command')).toContainText('atelier-agent --server');
  await expect(page.getByTestId('agent-command')).toContainText('ATELIER_NODE_TOKEN=atn_');
  await expect(page.locator('section[data-node="gpu-box-1"]').getByTestId('node-status')).toHaveText('Pending');
});

test('a built-in training job started from the UI completes and shows its loss chart', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Training' }).click();
  await hydrated(page);
  await page.getByRole('link', { name: 'New training job' }).click();
  await hydrated(page);
  await page.getByLabel('Name').fill('ui-tabular');
  await expect(page.getByLabel('Algorithm')).toHaveValue('builtin:tabular');
  // Defaults are filled in and explained.
  await expect(page.getByLabel('Hyperparameters (JSON)')).toHaveValue(/"epochs": "20"/);
  await page.getByText('What the hyperparameters mean').click();
  await expect(page.getByText('Passes over the training data.')).toBeVisible();
  await page.getByLabel('Hyperparameters (JSON)').fill('{"epochs": "12", "batch_size": "32"}');
  await page.getByLabel('Training data (channel train)').setInputFiles({
    name: 'clusters.csv',
    mimeType: 'text/csv',
    buffer: Buffer.from(clusters(300, 11)),
  });
  await page.getByRole('button', { name: 'Start training job' }).click();

  await expect(page).toHaveURL(/\/training\/ui-tabular$/);
  await hydrated(page);
  // The page follows the job live: no reload.
  await expect(page.getByTestId('job-state')).toHaveText('Completed', { timeout: 90_000 });
  await expect(page.getByTestId('metric-chart').locator('svg').first()).toBeVisible();
  await expect(page.getByTestId('metric-chart')).toContainText('train_loss');
  await expect(page.getByTestId('job-log')).toContainText('#metric epoch=12');
  await expect(page.getByTestId('artifacts')).toContainText('model.tar.gz');
  await expect(page.getByTestId('timeline')).toContainText('Uploading');

  // Bad input is refused with the reason, and nothing is created.
  await page.goto('/training/new');
  await hydrated(page);
  await page.getByLabel('Name').fill('ui-bad');
  await page.getByLabel('Hyperparameters (JSON)').fill('{"epochs": "0"}');
  await page.getByLabel('Training data (channel train)').setInputFiles({
    name: 'clusters.csv',
    mimeType: 'text/csv',
    buffer: Buffer.from(clusters(20, 11)),
  });
  await page.getByRole('button', { name: 'Start training job' }).click();
  await expect(page.locator('.error')).toContainText('hyperparameter epochs: 0 is outside 1..=10000');
  const list = await page.request.get('/api/v1/training-jobs?name_contains=ui-bad');
  expect(await list.json()).toEqual([]);
});
