import { test, expect, type Browser, type Page } from '@playwright/test';
import { ADMIN_PASSWORD, clusters, hydrated, ok, signIn, userPage as signedIn } from './helpers';

const PASSWORD = 'model-user-password-1';

async function userPage(browser: Browser, username: string): Promise<Page> {
  return signedIn(browser, username, PASSWORD);
}

test('a data scientist registers a version from a training job; another user approves it from the inbox', async ({ page, browser }) => {
  // Training takes a while in debug builds (`cargo xtask e2e`).
  test.setTimeout(180_000);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await ok(await page.request.post('/api/v1/users', { data: { username: 'dmitri', password: PASSWORD, policies: ['DataScientist'] } }));
  await ok(await page.request.post('/api/v1/users', { data: { username: 'rhea', password: PASSWORD, policies: ['Reviewer'] } }));

  // Dmitri trains a small model (through the API; the training page has its own test).
  const dmitri = await userPage(browser, 'dmitri');
  const upload = await ok(await dmitri.request.post('/api/v1/artifacts?name=clusters.csv', { data: Buffer.from(clusters(200)) }));
  await ok(await dmitri.request.post('/api/v1/training-jobs', {
    data: {
      name: 'ui-churn-1',
      spec: {
        algorithm: { type: 'builtin', name: 'tabular' },
        hyperparameters: { epochs: '8', batch_size: '32' },
        channels: [{ name: 'train', artifacts: [upload.id] }],
      },
    },
  }));
  await dmitri.goto('/training/ui-churn-1');
  await hydrated(dmitri);
  await expect(dmitri.getByTestId('job-state')).toHaveText('Completed', { timeout: 90_000 });

  // One click on the job's page registers it, in a new group.
  const form = dmitri.getByTestId('register-model');
  await form.getByLabel('Model group').fill('ui-churn');
  await form.getByLabel('Description').fill('first try');
  await form.getByRole('button', { name: 'Register model version' }).click();
  await expect(dmitri).toHaveURL(/\/models\/ui-churn\/versions\/1$/);
  await expect(dmitri.getByTestId('version-status')).toHaveText('PendingManualApproval');
  await expect(dmitri.getByTestId('lineage')).toContainText('ui-churn-1');
  await expect(dmitri.getByTestId('versus')).toContainText('train_loss');
  // Dmitri may not decide on her own version: no form, and the API refuses.
  await expect(dmitri.getByTestId('decision')).toHaveCount(0);
  const own = await dmitri.request.post('/api/v1/model-groups/ui-churn/versions/1/approval', { data: { status: 'Approved' } });
  expect(own.status()).toBe(403);

  // Rhea sees it waiting in her inbox, with the count in the navigation.
  const rhea = await userPage(browser, 'rhea');
  await expect(rhea.getByTestId('approvals-count')).toHaveText('1');
  await rhea.getByRole('link', { name: /Approvals/ }).click();
  await hydrated(rhea);
  await rhea.getByTestId('inbox').getByRole('link', { name: 'ui-churn v1' }).click();
  await hydrated(rhea);
  await expect(rhea.getByTestId('version-creator')).toHaveText('dmitri');
  const decision = rhea.getByTestId('decision');
  // Rejecting needs a reason.
  await decision.getByRole('button', { name: 'Reject' }).click();
  await expect(decision.getByRole('alert')).toContainText('a comment is required');
  await decision.getByLabel('Comment').fill('loss is fine for a first version');
  await decision.getByRole('button', { name: 'Approve' }).click();
  await expect(rhea.getByTestId('version-status')).toHaveText('Approved');
  await expect(rhea.getByTestId('version-timeline')).toContainText('loss is fine for a first version');
  await expect(rhea.getByTestId('decision').getByRole('button', { name: 'Approve' })).toHaveCount(0);
  // The count in the navigation follows the decision.
  await expect(rhea.getByTestId('approvals-count')).toHaveCount(0);

  // The registry shows the approved version; Rhea's inbox is empty.
  await dmitri.goto('/models');
  await hydrated(dmitri);
  const row = dmitri.locator('tr[data-model-group="ui-churn"]');
  await expect(row).toContainText('v1');
  await expect(row.locator('td').nth(2)).toHaveText('v1');
  await rhea.goto('/approvals');
  await expect(rhea.getByTestId('inbox-empty')).toBeVisible();
});
