import { expect, type Browser, type Page } from '@playwright/test';

export const ADMIN_PASSWORD = process.env.ATELIER_ADMIN_PASSWORD ?? 'e2e-admin-password';

/** Waits until the WASM bundle has hydrated the page (the app marks <body>). */
export async function hydrated(page: Page) {
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
}

/** Signs in through the form and waits for the home page. */
export async function signIn(page: Page, username: string, password: string) {
  await page.goto('/login');
  await hydrated(page);
  await page.getByLabel('Username').fill(username);
  await page.locator('#password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(/\/$/);
  await hydrated(page);
}

/** Two clusters a straight line separates (x1 + x2 > 0), for a quick built-in tabular job. */
export function clusters(rows: number, seed = 7, labels: [string, string] = ['up', 'down']): string {
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return (seed / 2147483648) * 2 - 1;
  };
  const lines = ['x1,x2,label'];
  for (let i = 0; i < rows; i++) {
    const x1 = next();
    const x2 = next();
    lines.push(`${x1.toFixed(4)},${x2.toFixed(4)},${x1 + x2 > 0 ? labels[0] : labels[1]}`);
  }
  return lines.join('\n') + '\n';
}

/** The JSON body of a successful API response (fails the test with the body otherwise). */
export async function ok(response: Awaited<ReturnType<Page['request']['post']>>) {
  expect(response.ok(), await response.text()).toBeTruthy();
  return response.json();
}

/** A page of its own browser context, signed in as `username`. */
export async function userPage(browser: Browser, username: string, password: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await signIn(page, username, password);
  return page;
}

/**
 * Collects a page's browser errors (a panic in the WASM code, a failed hydration shows
 * up here); read the array at the end of a test.
 */
export function browserErrors(page: Page): string[] {
  const seen: string[] = [];
  page.on('console', (m) => {
    // A refused request (the test provokes 4xx answers) is not a page error.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) seen.push(m.text().slice(0, 500));
  });
  page.on('pageerror', (e) => seen.push(String(e).slice(0, 500)));
  return seen;
}
