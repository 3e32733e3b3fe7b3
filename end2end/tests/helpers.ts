import { expect, type Browser, type Page } from '@playwright/test';
import { deflateSync } from 'node:zlib';

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

type Rgb = [number, number, number];

/** A PNG whose pixel at (x, y) is `pixel(x, y)`, encoded here (no image files in the repo). */
export function pngOf(width: number, height: number, pixel: (x: number, y: number) => Rgb): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (bytes: Buffer) => {
    let c = 0xffffffff;
    for (const byte of bytes) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([length, body, sum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  // Each row: filter type 0 (none), then RGB triples.
  const rows = Array.from({ length: height }, (_, y) =>
    Buffer.from([0, ...Array.from({ length: width }, (_, x) => pixel(x, y)).flat()]),
  );
  return Buffer.concat([
    Buffer.from('89504e470d0a1a0a', 'hex'),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A solid-colour PNG. */
export function png(width: number, height: number, rgb: Rgb): Buffer {
  return pngOf(width, height, () => rgb);
}

/**
 * A filled square of `colour` on a light grey background: a shape a small CNN tells
 * apart by colour. `at` and `size` are fractions of the 32-pixel side.
 */
export function shape(colour: Rgb, at: [number, number], size: number, background: Rgb = [225, 225, 225]): Buffer {
  const side = 32;
  const [x0, y0] = at.map((f) => Math.round(f * side));
  const s = Math.round(size * side);
  return pngOf(side, side, (x, y) => (x >= x0 && x < x0 + s && y >= y0 && y < y0 + s ? colour : background));
}

/** The id of the labeling task on screen. */
export async function taskId(page: Page) {
  return page.getByTestId('task').getAttribute('data-task');
}

/**
 * Waits until the labeling page shows another task than `previous`, or says none is
 * left; on a timeout the error names what the page and the browser reported.
 */
export async function settled(page: Page, previous: string | null, errors: string[] = []) {
  try {
    await expect
      .poll(async () => {
        if (await page.getByTestId('idle').isVisible()) return true;
        const task = page.getByTestId('task');
        return (await task.count()) > 0 && (await task.getAttribute('data-task')) !== previous;
      }, { timeout: 30_000 })
      .toBe(true);
  } catch (e) {
    const shown = await page.locator('.error').allTextContents();
    throw new Error(`${e}\npage errors: ${shown.join(' | ') || 'none'}\nbrowser errors: ${errors.join('\n') || 'none'}`);
  }
}

/** Opens a labeling job from "My work". */
export async function openWork(page: Page, job: string) {
  await page.getByRole('link', { name: 'My work' }).click();
  await hydrated(page);
  const card = page.getByTestId('my-work').locator('section', { hasText: job });
  await card.getByRole('link', { name: 'Start labeling' }).click();
  await expect(page.getByTestId('task')).toBeVisible();
}
