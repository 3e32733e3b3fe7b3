import { test, expect, type Browser, type Page } from '@playwright/test';
import { ADMIN_PASSWORD, hydrated, openWork, png, settled, signIn, taskId } from './helpers';

const PASSWORD = 'labeler-password-1';

/** The admin's API calls, made with the signed-in session. */
async function api(page: Page, method: 'get' | 'post', path: string, data?: unknown) {
  const response = await page.request[method](path, data === undefined ? {} : { data });
  expect(response.ok(), `${method} ${path}: ${await response.text()}`).toBeTruthy();
  return response;
}

async function upload(page: Page, dataset: string, name: string, mimeType: string, buffer: Buffer) {
  const response = await page.request.post(`/api/v1/datasets/${dataset}/batches`, {
    multipart: { file: { name, mimeType, buffer } },
  });
  expect(response.ok(), await response.text()).toBeTruthy();
}

/** Browser errors per page (a panic in the WASM code shows up here), for failure messages. */
const problems = new WeakMap<Page, string[]>();

async function labelerPage(browser: Browser, username: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen: string[] = [];
  problems.set(page, seen);
  page.on('console', (m) => {
    if (m.type() === 'error') seen.push(m.text().slice(0, 500));
  });
  page.on('pageerror', (e) => seen.push(String(e).slice(0, 500)));
  await signIn(page, username, PASSWORD);
  return page;
}

test('a team labels an image job from the keyboard and the output manifest downloads', async ({ page, browser }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await api(page, 'post', '/api/v1/groups', { name: 'ui-raters' });
  for (const username of ['lara', 'leo', 'lou']) {
    await api(page, 'post', '/api/v1/users', { username, password: PASSWORD, policies: ['Labeler'], groups: ['ui-raters'] });
  }
  await api(page, 'post', '/api/v1/datasets', { name: 'ui-shapes', kind: 'image' });
  await upload(page, 'ui-shapes', 'red.png', 'image/png', png(40, 30, [220, 30, 30]));
  await upload(page, 'ui-shapes', 'blue.png', 'image/png', png(40, 30, [30, 30, 220]));
  await upload(page, 'ui-shapes', 'red2.png', 'image/png', png(40, 30, [200, 20, 20]));

  // The job is started from the form.
  await page.getByRole('link', { name: 'Labeling jobs' }).click();
  await hydrated(page);
  await page.getByRole('link', { name: 'New labeling job' }).click();
  await hydrated(page);
  await page.getByLabel('Name').fill('ui-colours');
  await page.getByLabel('Dataset').selectOption('ui-shapes');
  await page.getByLabel('Task type').selectOption('image_classification');
  await page.getByLabel('Label categories').fill('red\nblue = b');
  await page.getByLabel('Instructions').fill('Pick the **main colour**. <script>window.pwned = 1</script>');
  await page.getByLabel('ui-raters').check();
  await page.getByLabel('Workers per item').fill('2');
  await page.getByRole('button', { name: 'Start labeling job' }).click();
  await expect(page).toHaveURL(/\/labeling\/ui-colours$/);
  await expect(page.getByTestId('job-status')).toHaveText('InProgress');
  await expect(page.getByTestId('job-progress')).toContainText('0 of 3 items labeled');
  await expect(page.locator('.markdown strong')).toHaveText('main colour');
  await expect(page.locator('.markdown')).toContainText('<script>');

  const truth: Record<string, string> = { 'red.png': 'red', 'blue.png': 'blue', 'red2.png': 'red' };
  const keyFor: Record<string, string> = { red: '1', blue: 'b' };
  const itemName = async (p: Page) => ((await p.getByTestId('task').locator('p.muted').textContent()) ?? '').split(': ')[1];

  // Lara skips her first task with S, then labels the rest; Z undoes a choice.
  const lara = await labelerPage(browser, 'lara');
  await openWork(lara, 'ui-colours');
  await expect(lara.locator('.labeler-side')).toContainText('Pick the main colour');
  expect(await lara.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();
  const skipped = await itemName(lara);
  const first = await taskId(lara);
  // The next item is held and its image preloaded before the first key is pressed.
  await expect(lara.locator('img.preload')).toHaveCount(1);
  await lara.keyboard.press('s');
  await settled(lara, first, problems.get(lara));
  expect(await itemName(lara)).not.toBe(skipped);
  let done = 0;
  while (!(await lara.getByTestId('idle').isVisible())) {
    const id = await taskId(lara);
    const item = await itemName(lara);
    await expect.poll(() => lara.getByTestId('task-image').evaluate((img: HTMLImageElement) => img.naturalWidth)).toBe(40);
    const right = truth[item];
    const wrong = right === 'red' ? 'blue' : 'red';
    await lara.keyboard.press(keyFor[wrong]);
    await expect(lara.getByRole('button', { name: wrong })).toHaveAttribute('aria-pressed', 'true');
    await lara.keyboard.press(keyFor[right]);
    await lara.keyboard.press('z');
    await expect(lara.getByRole('button', { name: wrong })).toHaveAttribute('aria-pressed', 'true');
    await lara.keyboard.press(keyFor[right]);
    await expect(lara.getByRole('button', { name: right })).toHaveAttribute('aria-pressed', 'true');
    await lara.keyboard.press('Enter');
    done += 1;
    await expect(lara.getByTestId('session')).toContainText(`${done} tasks this session`);
    await settled(lara, id, problems.get(lara));
  }
  expect(done).toBe(2);

  // Leo labels all three; Lou gets only the item Lara skipped.
  for (const [name, expected] of [['leo', 3], ['lou', 1]] as const) {
    const labeler = await labelerPage(browser, name);
    await openWork(labeler, 'ui-colours');
    let count = 0;
    while (!(await labeler.getByTestId('idle').isVisible())) {
      const id = await taskId(labeler);
      const item = await itemName(labeler);
      if (name === 'lou') expect(item).toBe(skipped);
      await labeler.keyboard.press(keyFor[truth[item]]);
      await labeler.keyboard.press('Enter');
      count += 1;
      await expect(labeler.getByTestId('session')).toContainText(`${count} tasks this session`);
      await settled(labeler, id, problems.get(labeler));
    }
    expect(count).toBe(expected);
    if (name === 'lou') await expect(labeler.getByTestId('idle')).toContainText('Completed');
  }

  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId('job-status')).toHaveText('Completed');
  await expect(page.getByTestId('job-progress')).toContainText('3 of 3 items labeled · 6 annotations · 1 skips');
  const quality = page.getByTestId('quality');
  for (const name of ['lara', 'leo', 'lou']) await expect(quality).toContainText(name);
  await expect(quality.locator('svg')).toHaveCount(2);
  const download = page.waitForEvent('download');
  await page.getByTestId('download-output').click();
  const file = await download;
  expect(file.suggestedFilename()).toBe('ui-colours.manifest');
  const path = await file.path();
  const { readFileSync } = await import('node:fs');
  const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  expect(lines).toHaveLength(3);
  for (const line of lines) {
    expect(line['ui-colours-metadata']['class-name']).toBe(truth[line['source-ref']]);
    expect(line['ui-colours-metadata']['type']).toBe('groundtruth/image-classification');
  }
});

test('boxes are drawn, moved and relabelled with the mouse and keys; spans are marked on text', async ({ page, browser }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await api(page, 'post', '/api/v1/groups', { name: 'ui-drawers' });
  await api(page, 'post', '/api/v1/users', { username: 'dora', password: PASSWORD, policies: ['Labeler'], groups: ['ui-drawers'] });
  await api(page, 'post', '/api/v1/datasets', { name: 'ui-street', kind: 'image' });
  await upload(page, 'ui-street', 'street.png', 'image/png', png(400, 200, [90, 160, 90]));
  await api(page, 'post', '/api/v1/labeling/jobs', {
    name: 'ui-boxes', dataset: 'ui-street', task_type: 'bounding_box', workers_per_item: 1,
    categories: [{ name: 'car' }, { name: 'person' }], teams: ['ui-drawers'],
  });
  await api(page, 'post', '/api/v1/datasets', { name: 'ui-news', kind: 'text' });
  await upload(page, 'ui-news', 'news.jsonl', 'application/jsonl', Buffer.from('{"source": "Ada Lovelace met Babbage in London."}\n'));
  await api(page, 'post', '/api/v1/labeling/jobs', {
    name: 'ui-names', dataset: 'ui-news', task_type: 'named_entity', workers_per_item: 1,
    categories: [{ name: 'PERSON', hotkey: 'p' }, { name: 'PLACE', hotkey: 'l' }], teams: ['ui-drawers'],
  });

  const dora = await labelerPage(browser, 'dora');
  await openWork(dora, 'ui-boxes');
  const image = dora.getByTestId('task-image');
  await expect.poll(() => image.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBe(400);
  const rect = await image.boundingBox();
  if (!rect) throw new Error('the image has no box');
  const scale = 400 / rect.width;
  const at = (x: number, y: number) => [rect.x + x / scale, rect.y + y / scale] as const;
  // Draw a box from (40, 20) to (140, 100) in image pixels.
  await dora.mouse.move(...at(40, 20));
  await dora.mouse.down();
  await dora.mouse.move(...at(90, 60), { steps: 4 });
  await dora.mouse.move(...at(140, 100), { steps: 4 });
  await dora.mouse.up();
  await expect(dora.getByTestId('box')).toHaveCount(1);
  // Move it 50 pixels right by dragging its middle.
  await dora.mouse.move(...at(90, 60));
  await dora.mouse.down();
  await dora.mouse.move(...at(140, 60), { steps: 4 });
  await dora.mouse.up();
  // A second box, then Z takes it back.
  await dora.mouse.move(...at(300, 120));
  await dora.mouse.down();
  await dora.mouse.move(...at(350, 180), { steps: 4 });
  await dora.mouse.up();
  await expect(dora.getByTestId('box')).toHaveCount(2);
  await dora.keyboard.press('z');
  await expect(dora.getByTestId('box')).toHaveCount(1);
  // The selected box becomes a person with key 2.
  await dora.keyboard.press('ArrowRight');
  await dora.keyboard.press('2');
  await expect(dora.getByTestId('box')).toContainText('person');
  await dora.keyboard.press('Enter');
  await expect(dora.getByTestId('idle')).toBeVisible();

  const output = await (await api(page, 'get', '/api/v1/labeling/jobs/ui-boxes/output')).text();
  const box = JSON.parse(output.trim())['ui-boxes'];
  expect(box.image_size).toEqual([{ width: 400, height: 200, depth: 3 }]);
  expect(box.annotations).toHaveLength(1);
  const drawn = box.annotations[0];
  expect(drawn.class_id).toBe(1);
  // Pointer positions map to image pixels whatever the displayed size (a pixel or two of rounding).
  for (const [key, want] of [['left', 90], ['top', 20], ['width', 100], ['height', 80]] as const) {
    expect(Math.abs(drawn[key] - want), `${key} ${drawn[key]}`).toBeLessThanOrEqual(3);
  }

  // Spans: select "Ada Lovelace", press p; select "London", press l; remove nothing.
  await openWork(dora, 'ui-names');
  const text = dora.getByTestId('task-text');
  await expect(text).toHaveText('Ada Lovelace met Babbage in London.');
  const select = async (start: number, end: number) => {
    await text.evaluate(
      (el, [s, e]) => {
        const node = el.querySelector('span')?.firstChild ?? el.firstChild;
        if (!node) throw new Error('no text');
        const range = document.createRange();
        range.setStart(node, s);
        range.setEnd(node, e);
        const selection = window.getSelection();
        selection?.removeAllRanges();
        selection?.addRange(range);
        el.dispatchEvent(new MouseEvent('mouseup', { bubbles: true }));
      },
      [start, end],
    );
  };
  await select(0, 12);
  await dora.keyboard.press('p');
  await expect(dora.getByTestId('entity')).toHaveText('Ada Lovelace');
  // The rest of the text is now the second span element: "London" starts 16 characters in.
  const rest = ' met Babbage in London.';
  await text.evaluate((el, offset) => {
    const node = el.querySelectorAll('span')[0]?.firstChild;
    if (!node) throw new Error('no rest');
    const range = document.createRange();
    range.setStart(node, offset);
    range.setEnd(node, offset + 6);
    window.getSelection()?.removeAllRanges();
    window.getSelection()?.addRange(range);
    el.dispatchEvent(new MouseEvent('mouseup', { bubbles: true }));
  }, rest.indexOf('London'));
  await dora.keyboard.press('l');
  await expect(dora.getByTestId('entity')).toHaveCount(2);
  await dora.keyboard.press('Enter');
  await expect(dora.getByTestId('idle')).toBeVisible();
  const spans = JSON.parse((await (await api(page, 'get', '/api/v1/labeling/jobs/ui-names/output')).text()).trim());
  expect(spans['ui-names'].annotations.entities).toEqual([
    { label: 'PERSON', startOffset: 0, endOffset: 12 },
    { label: 'PLACE', startOffset: 28, endOffset: 34 },
  ]);
});
