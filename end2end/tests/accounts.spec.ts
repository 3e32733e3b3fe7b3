import { test, expect } from '@playwright/test';
import { ADMIN_PASSWORD, hydrated, signIn } from './helpers';

test('an API token created in the UI works on the REST API until revoked', async ({ page, request }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'API tokens' }).click();
  await expect(page).toHaveURL(/\/account\/tokens$/);
  await page.getByLabel('Name').fill('e2e-script');
  await page.getByRole('button', { name: 'Create token' }).click();
  const secret = (await page.getByTestId('new-token').textContent())?.trim() ?? '';
  expect(secret).toMatch(/^atl_/);

  const me = await request.get('/api/v1/me', { headers: { Authorization: `Bearer ${secret}` } });
  expect(me.status()).toBe(200);
  expect((await me.json()).username).toBe('admin');

  const row = page.getByRole('row', { name: /e2e-script/ });
  await expect(row).toContainText('active');
  await row.getByRole('button', { name: 'Revoke' }).click();
  await expect(page.getByRole('row', { name: /e2e-script/ })).toContainText('revoked');

  const after = await request.get('/api/v1/me', { headers: { Authorization: `Bearer ${secret}` } });
  expect(after.status()).toBe(401);
});

test('an admin creates a user who signs in, sees no admin area, and gets field errors', async ({ page, browser }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Users' }).click();
  await hydrated(page);
  await page.getByLabel('Username').fill('dana');
  await page.getByLabel('Display name').fill('Dana Scientist');
  await page.getByLabel('Initial password').fill('dana-password-1');
  await page.getByRole('button', { name: 'Create user' }).click();
  await expect(page.locator('tr[data-username="dana"]')).toContainText('active');

  const danaContext = await browser.newContext();
  const dana = await danaContext.newPage();
  await signIn(dana, 'dana', 'dana-password-1');
  await expect(dana.getByTestId('current-user')).toHaveText('Dana Scientist');
  await expect(dana.getByRole('link', { name: 'Users' })).toHaveCount(0);

  await dana.getByRole('link', { name: 'Password' }).click();
  await hydrated(dana);
  await dana.getByLabel('Current password').fill('wrong-current');
  await dana.getByLabel('New password', { exact: true }).fill('dana-password-2');
  await dana.getByLabel('Repeat new password').fill('dana-password-2');
  await dana.getByRole('button', { name: 'Change password' }).click();
  await expect(dana.getByRole('alert')).toHaveText('current password is incorrect');

  // Deactivation ends Dana's session at once.
  await page.locator('tr[data-username="dana"]').getByRole('link', { name: 'dana' }).click();
  await hydrated(page);
  await page.getByRole('button', { name: 'Deactivate' }).click();
  await page.getByRole('alertdialog').getByRole('button', { name: 'Deactivate user' }).click();
  await expect(page.getByText('Deactivated ·')).toBeVisible();
  await dana.reload();
  await expect(dana).toHaveURL(/\/login/);
  await danaContext.close();
});
