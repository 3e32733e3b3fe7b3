import { test, expect } from '@playwright/test';
import { ADMIN_PASSWORD, hydrated, signIn } from './helpers';

test('signed-out visitors are sent to the sign-in page', async ({ page }) => {
  await page.goto('/account/tokens');
  await expect(page).toHaveURL(/\/login\?next=\/account\/tokens$/);
  await expect(page.getByRole('heading', { name: 'Atelier' })).toBeVisible();
});

test('the sign-in page is interactive after hydration', async ({ page }) => {
  await page.goto('/login');
  await hydrated(page);
  const password = page.locator('#password');
  await password.fill('secret-text');
  await expect(password).toHaveAttribute('type', 'password');
  // The show/hide toggle is a client-side handler: it only works once hydrated.
  await page.getByRole('button', { name: 'Show password' }).click();
  await expect(password).toHaveAttribute('type', 'text');
  await expect(page.getByRole('button', { name: 'Show password' })).toHaveText('Hide');
});

test('a wrong password shows an error and keeps the visitor signed out', async ({ page }) => {
  await page.goto('/login');
  await hydrated(page);
  await page.getByLabel('Username').fill('admin');
  await page.locator('#password').fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('alert')).toHaveText('Incorrect username or password.');
  await expect(page).toHaveURL(/\/login/);
  await page.goto('/');
  await expect(page).toHaveURL(/\/login/);
});

test('sign in, see the home page, reload and stay signed in, sign out', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await expect(page.getByRole('heading', { name: 'Welcome, Administrator' })).toBeVisible();
  await expect(page.getByTestId('current-user')).toHaveText('Administrator');
  await expect(page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' })).toBeVisible();

  // A client-side counter: proves the signed-in page hydrated too.
  const hello = page.getByTestId('hello');
  await hello.click();
  await hello.click();
  await expect(hello).toHaveText('Hello ×2');

  await page.reload();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByTestId('current-user')).toHaveText('Administrator');

  await hydrated(page);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login/);
  await page.goto('/');
  await expect(page).toHaveURL(/\/login\?next=\/$/);
});

test('next= brings the user back to the page they asked for', async ({ page }) => {
  await page.goto('/account/password');
  await expect(page).toHaveURL(/next=\/account\/password/);
  await hydrated(page);
  await page.getByLabel('Username').fill('admin');
  await page.locator('#password').fill(ADMIN_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(/\/account\/password$/);
  await expect(page.getByRole('heading', { name: 'Change password' })).toBeVisible();
});
