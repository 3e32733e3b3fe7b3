import { test, expect } from '@playwright/test';
import { ADMIN_PASSWORD, hydrated, signIn } from './helpers';

test('a Labeler cannot see or reach the model registry; denials are audited and the simulator explains', async ({ page, browser }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Users' }).click();
  await hydrated(page);
  await page.getByLabel('Username').fill('lena');
  await page.getByLabel('Display name').fill('Lena Labeler');
  await page.getByLabel('Initial password').fill('lena-password-1');
  await page.getByLabel('Policy').selectOption('Labeler');
  await page.getByRole('button', { name: 'Create user' }).click();
  await expect(page.locator('tr[data-username="lena"]')).toContainText('Labeler');

  // The administrator sees the registry in the navigation.
  await expect(page.getByRole('link', { name: 'Models' })).toBeVisible();

  const lenaContext = await browser.newContext();
  const lena = await lenaContext.newPage();
  await signIn(lena, 'lena', 'lena-password-1');
  await expect(lena.getByTestId('current-user')).toHaveText('Lena Labeler');
  await expect(lena.getByRole('link', { name: 'Models' })).toHaveCount(0);
  await expect(lena.getByRole('link', { name: 'Users' })).toHaveCount(0);

  // Direct URL: the page renders the refusal, not the registry.
  await lena.goto('/models');
  await expect(lena.getByTestId('models-error')).toContainText('lena is not allowed to perform models:ListModelGroups');
  await expect(lena.getByRole('button', { name: 'Create model group' })).toHaveCount(0);
  // API with the same session: refused.
  const api = await lena.request.get('/api/v1/model-groups');
  expect(api.status()).toBe(403);
  expect((await api.json()).error.code).toBe('forbidden');
  await lenaContext.close();

  // Both denials are in the audit log.
  await page.goto('/admin/audit?principal=lena&decision=Deny');
  await hydrated(page);
  const denied = page.locator('tr[data-decision="Deny"]', { hasText: 'models:ListModelGroups' });
  await expect(denied).toHaveCount(2);
  // Filtered by time: today has them, a day long past has none.
  const today = new Date().toISOString().slice(0, 10);
  await page.goto(`/admin/audit?principal=lena&decision=Deny&from=${today}&to=${today}`);
  await expect(denied).toHaveCount(2);
  await page.goto('/admin/audit?principal=lena&from=2001-01-01&to=2001-01-02');
  await expect(page.getByText('No matching events.')).toBeVisible();

  // The simulator explains the decision.
  await page.getByRole('link', { name: 'Simulator' }).click();
  await hydrated(page);
  await page.getByLabel('User').fill('lena');
  await page.getByLabel('Action').selectOption('models:ListModelGroups');
  await page.getByLabel('Resource').fill('atelier:models:group/*');
  await page.getByRole('button', { name: 'Simulate' }).click();
  await expect(page.getByTestId('decision')).toHaveText('Deny');
  await expect(page.getByTestId('explanation')).toContainText('Implicitly denied');

  await page.getByLabel('Action').selectOption('labeling:ListLabelingJobs');
  await page.getByLabel('Resource').fill('atelier:labeling:job/*');
  await page.getByRole('button', { name: 'Simulate' }).click();
  await expect(page.getByTestId('decision')).toHaveText('Allow');
  await expect(page.getByTestId('explanation')).toContainText('Sid SeeJobs) of Labeler');
});

test('a policy is edited in the JSON editor with server-side validation, versioned and rolled back', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Policies' }).click();
  await hydrated(page);
  await page.getByLabel('Name').fill('ModelReaders');
  await page.getByLabel('Document').fill(
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:Lst*", "Resource": "*"}]}',
  );
  await page.getByRole('button', { name: 'Create policy' }).click();
  await expect(page.getByRole('alert')).toContainText('Statement[0]: action "models:Lst*" is not in the catalogue');

  await page.getByLabel('Document').fill(
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:List*", "Resource": "*"}]}',
  );
  await page.getByRole('button', { name: 'Create policy' }).click();
  await expect(page).toHaveURL(/\/admin\/policies\/ModelReaders$/);
  await hydrated(page);
  await expect(page.getByText('Default version: v1.')).toBeVisible();

  const editor = page.getByTestId('policy-document');
  await editor.fill('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:*", "Resource": "atelier:models:grp/x"}]}');
  await page.getByRole('button', { name: 'Save new version' }).click();
  await expect(page.getByRole('alert')).toContainText('does not fit any models resource type');
  await expect(page.getByText('Default version: v1.')).toBeVisible();

  await editor.fill('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "models:*", "Resource": "*"}]}');
  await page.getByRole('button', { name: 'Save new version' }).click();
  await expect(page.getByText('Default version: v2.')).toBeVisible();
  await expect(page.getByTestId('policy-document')).toHaveValue(/models:\*/);

  await page.locator('tr[data-version="1"]').getByRole('button', { name: 'Make default' }).click();
  await expect(page.getByText('Default version: v1.')).toBeVisible();
  await expect(page.getByTestId('policy-document')).toHaveValue(/models:List\*/);
});

test('a group grants its policies to its members', async ({ page, browser }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Users' }).click();
  await hydrated(page);
  await page.getByLabel('Username').fill('gary');
  await page.getByLabel('Initial password').fill('gary-password-1');
  await page.getByRole('button', { name: 'Create user' }).click();
  await expect(page.locator('tr[data-username="gary"]')).toBeVisible();

  await page.getByRole('link', { name: 'Groups' }).click();
  await hydrated(page);
  await page.getByLabel('Name').fill('readers');
  await page.getByRole('button', { name: 'Create group' }).click();
  await page.locator('tr[data-group="readers"]').getByRole('link', { name: 'readers' }).click();
  await hydrated(page);
  await page.getByLabel('Username to add').fill('gary');
  await page.getByRole('button', { name: 'Add member' }).click();
  await expect(page.getByTestId('group-members')).toContainText('gary');
  await page.getByLabel('Policy to attach').selectOption('ReadOnly');
  await page.getByRole('button', { name: 'Attach policy' }).click();
  await expect(page.getByTestId('group-policies')).toContainText('ReadOnly');

  const garyContext = await browser.newContext();
  const gary = await garyContext.newPage();
  await signIn(gary, 'gary', 'gary-password-1');
  await gary.getByRole('link', { name: 'Models' }).click();
  await hydrated(gary);
  await expect(gary.getByRole('heading', { name: 'Model registry' })).toBeVisible();
  await expect(gary.getByTestId('models-error')).toHaveCount(0);
  // ReadOnly: the registry is visible, creating in it is not offered.
  await expect(gary.getByRole('button', { name: 'Create model group' })).toHaveCount(0);
  await garyContext.close();
});
