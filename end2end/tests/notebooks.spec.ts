import { test, expect } from '@playwright/test';
import { ADMIN_PASSWORD, browserErrors, hydrated, ok, signIn, userPage } from './helpers';

const PASSWORD = 'notebook-user-password-1';

test('a data scientist runs cells on a kernel, sees printed text and a plot, and exports and re-imports the notebook', async ({ page, browser }) => {
  test.setTimeout(600_000);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await ok(await page.request.post('/api/v1/users', { data: { username: 'nadia', password: PASSWORD, policies: ['DataScientist'] } }));
  const nadia = await userPage(browser, 'nadia', PASSWORD);
  const errors = browserErrors(nadia);

  // Create a notebook from the list.
  await nadia.getByRole('link', { name: 'Notebooks' }).click();
  await hydrated(nadia);
  await nadia.getByTestId('new-notebook').getByLabel('Name').fill('exploration');
  await nadia.getByRole('button', { name: 'Create' }).click();
  await expect(nadia).toHaveURL(/\/notebooks\/[0-9a-f-]+$/);
  await hydrated(nadia);
  await expect(nadia.getByTestId('notebook-name')).toHaveText('exploration');

  // Start a kernel on the local agent (the first start may create its environment).
  await nadia.getByTestId('start-kernel').click();
  await expect(nadia.getByTestId('kernel-state')).toHaveText('idle', { timeout: 420_000 });

  // Type a cell that prints and run it with Shift+Enter: a new cell opens below.
  const cells = nadia.getByTestId('cell');
  await cells.nth(0).locator('textarea').fill("for i in range(3):\n    print('line', i)");
  await cells.nth(0).locator('textarea').press('Shift+Enter');
  await expect(cells.nth(0).getByTestId('outputs')).toContainText('line 0\nline 1\nline 2');
  await expect(cells.nth(0).locator('.prompt')).toHaveText('[1]:');
  await expect(cells).toHaveCount(2);

  // A plot appears as an image.
  await cells.nth(1).locator('textarea').fill('import matplotlib.pyplot as plt\nplt.plot([1, 4, 2])\nplt.title("demo")\nplt.show()');
  await cells.nth(1).getByTestId('run-cell').click();
  const image = cells.nth(1).locator('img.output');
  await expect(image).toBeVisible({ timeout: 60_000 });
  expect(await image.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBeGreaterThan(100);

  // An error shows its traceback; command mode keys add a Markdown cell.
  await nadia.getByTestId('notebook').click({ position: { x: 2, y: 2 } });
  await nadia.keyboard.press('Escape');
  await nadia.keyboard.press('b');
  await expect(cells).toHaveCount(3);
  await cells.nth(2).locator('textarea').fill('1/0');
  await cells.nth(2).locator('textarea').press('Control+Enter');
  await expect(cells.nth(2).locator('pre.output.error')).toContainText('ZeroDivisionError');
  await nadia.keyboard.press('Escape');
  await nadia.keyboard.press('b');
  await nadia.keyboard.press('m');
  await expect(cells).toHaveCount(4);
  await expect(cells.nth(3)).toHaveAttribute('data-kind', 'markdown');
  await cells.nth(3).locator('textarea').fill('# Findings\nThe **plot** rises.');
  await cells.nth(3).locator('textarea').press('Shift+Enter');
  await expect(cells.nth(3).locator('.markdown h1')).toHaveText('Findings');

  // Run all: in order, one after another, stopping at the error.
  await nadia.getByTestId('run-all').click();
  await expect(cells.nth(2).locator('.prompt')).toHaveText('[6]:', { timeout: 60_000 });
  await expect(cells.nth(0).locator('.prompt')).toHaveText('[4]:');
  await expect(cells.nth(1).locator('.prompt')).toHaveText('[5]:');
  await expect(cells.nth(2).locator('pre.output.error')).toContainText('ZeroDivisionError');
  await expect(cells.nth(4).locator('.prompt')).toHaveText('[ ]:');

  // Autosave: the outputs reach the server.
  await expect(nadia.getByTestId('save-state')).toHaveText('All changes saved', { timeout: 15_000 });
  const id = nadia.url().split('/').pop()!;
  const saved = await ok(await nadia.request.get(`/api/v1/notebooks/${id}`));
  expect(saved.content.cells).toHaveLength(5);
  expect(saved.content.cells[0].outputs[0].text).toBe('line 0\nline 1\nline 2\n');
  expect(saved.content.cells[1].outputs.some((o: any) => o.data && o.data['image/png'])).toBeTruthy();

  // Export through the download link and import the file back from the list.
  const [download] = await Promise.all([nadia.waitForEvent('download'), nadia.getByTestId('export-ipynb').click()]);
  expect(download.suggestedFilename()).toBe('exploration.ipynb');
  const file = await download.path();
  const exported = JSON.parse(require('fs').readFileSync(file, 'utf8'));
  expect(exported.nbformat).toBe(4);
  expect(exported.cells[0].source).toEqual(["for i in range(3):\n", "    print('line', i)"]);

  await nadia.getByRole('link', { name: 'Notebooks' }).click();
  await hydrated(nadia);
  const importForm = nadia.getByTestId('import-notebook');
  await importForm.getByLabel('File', { exact: true }).setInputFiles(file);
  await importForm.getByLabel('Name (default: the file\'s)').fill('exploration copy');
  await importForm.getByRole('button', { name: 'Import' }).click();
  const row = nadia.getByTestId('notebooks').locator('tr[data-notebook="exploration copy"]');
  await expect(row).toBeVisible();
  await row.getByRole('link', { name: 'exploration copy' }).click();
  await hydrated(nadia);
  await expect(nadia.getByTestId('cell').nth(0).getByTestId('outputs')).toContainText('line 2');
  await expect(nadia.getByTestId('cell').nth(1).locator('img.output')).toBeVisible();

  expect(errors).toEqual([]);
});

test('rich outputs run in a sandboxed frame, away from the studio, sized to their content', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  // An HTML output that tries what an attacker's output would: reach the page, read the
  // cookie, call the API. Its style and script run; none of the rest does.
  const probe = `<div id="tall" style="height: 300px">tall</div><p id="r">not run</p>
<style>p { color: rgb(255, 0, 0); }</style>
<script>
var r = [];
try { parent.document.title; r.push('parent:reachable'); } catch (e) { r.push('parent:blocked'); }
try { document.cookie; r.push('cookie:readable'); } catch (e) { r.push('cookie:blocked'); }
r.push('origin:' + self.origin);
document.getElementById('r').textContent = r.join(' ');
fetch('/api/v1/me').then(() => { document.body.dataset.fetch = 'reached'; }, () => { document.body.dataset.fetch = 'blocked'; });
</script>`;
  const content = { nbformat: 4, cells: [{ cell_type: 'code', id: 'rich', source: 'probe()', outputs: [
    { output_type: 'display_data', metadata: {}, data: { 'text/html': probe, 'text/plain': 'probe' } },
    { output_type: 'display_data', metadata: {}, data: { 'application/javascript': "element.textContent = 'js ran in ' + self.origin;" } },
  ] }] };
  const nb = await ok(await page.request.post('/api/v1/notebooks', { data: { name: 'rich outputs', content } }));
  // Stored as given: the script is there.
  expect(nb.content.cells[0].outputs[0].data['text/html']).toBe(probe);

  await page.goto(`/notebooks/${nb.id}`);
  await hydrated(page);
  const frames = page.locator('iframe.output-frame');
  await expect(frames).toHaveCount(2);
  await expect(frames.first()).toHaveAttribute('sandbox', 'allow-scripts');
  const html = page.frameLocator('iframe.output-frame').first();
  await expect(html.locator('#r')).toHaveText('parent:blocked cookie:blocked origin:null');
  await expect(html.locator('#r')).toHaveCSS('color', 'rgb(255, 0, 0)');
  await expect(html.locator('body')).toHaveAttribute('data-fetch', 'blocked');
  await expect(page.frameLocator('iframe.output-frame').nth(1).locator('#output')).toHaveText('js ran in null');
  // The frame grows to fit its document.
  await expect.poll(async () => (await frames.first().boundingBox())?.height ?? 0).toBeGreaterThan(300);
});
