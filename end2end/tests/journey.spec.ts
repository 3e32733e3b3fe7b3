// The whole loop in one studio, as its users live it: an admin sets up the team, a data
// scientist uploads images and starts a labeling job, two labelers label in their own
// browsers, the data scientist trains, registers and (after a reviewer approves)
// deploys the model, invokes it, watches monitoring catch shifted inputs, and the admin
// finds all of it in the audit log. A notebook then reads the labeling output.
//
// The screenshots in docs/ come from here: set ATELIER_SCREENSHOTS=docs/images (a path
// from the repository root) to refresh them; by default they go under target/.
import { test, expect, type Page } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  ADMIN_PASSWORD,
  browserErrors,
  hydrated,
  ok,
  openWork,
  settled,
  shape,
  signIn,
  taskId,
  userPage,
} from './helpers';

const PASSWORD = 'journey-password-1';
const SHOTS = resolve(__dirname, '..', '..', process.env.ATELIER_SCREENSHOTS ?? 'target/screenshots');

async function shot(page: Page, name: string) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: resolve(SHOTS, `${name}.png`), fullPage: false });
}

type Rgb = [number, number, number];
const COLOURS: Record<string, Rgb> = { red: [205, 40, 45], green: [40, 165, 60], blue: [45, 70, 210] };

/** Five shapes per colour, of varied place, size and shade. */
function dataset(): { name: string; colour: string; buffer: Buffer }[] {
  const out = [];
  for (const [colour, rgb] of Object.entries(COLOURS)) {
    for (let i = 0; i < 5; i++) {
      const shade = rgb.map((c) => Math.min(255, c + (i - 2) * 12)) as Rgb;
      const at: [number, number] = [0.1 + 0.1 * i, 0.5 - 0.08 * i];
      out.push({ name: `${colour}-${i + 1}.png`, colour, buffer: shape(shade, at, 0.35 + 0.05 * i) });
    }
  }
  return out;
}

const b64 = (buffer: Buffer) => buffer.toString('base64');

test.describe.serial('the whole loop', () => {
  // Read by the notebook journey.
  let sofiaToken = '';

  test('admin, data scientist, two labelers and a reviewer take a model from images to a monitored endpoint', async ({ page, browser }) => {
    test.setTimeout(600_000);

    // 1. The admin creates the team: users with built-in policies and a labeling team.
    await signIn(page, 'admin', ADMIN_PASSWORD);
    await shot(page, '01-home');
    await page.getByRole('link', { name: 'Groups' }).click();
    await hydrated(page);
    await page.getByLabel('Name').fill('shape-labelers');
    await page.getByLabel('Description').fill('labels the shapes dataset');
    await page.getByRole('button', { name: 'Create group' }).click();
    await expect(page.locator('tr[data-group="shape-labelers"]')).toBeVisible();
    await page.locator('tr[data-group="shape-labelers"]').getByRole('link').click();
    await hydrated(page);
    await page.getByLabel('Policy to attach').selectOption('Labeler');
    await page.getByRole('button', { name: 'Attach policy' }).click();
    await expect(page.getByTestId('group-policies')).toContainText('Labeler');

    await page.getByRole('link', { name: 'Users' }).click();
    await hydrated(page);
    const people: [string, string, string, string][] = [
      ['sofia', 'Sofia Data', 'DataScientist', ''],
      ['kai', 'Kai Labeler', '', 'shape-labelers'],
      ['mina', 'Mina Labeler', '', 'shape-labelers'],
      ['rosa', 'Rosa Reviewer', 'Reviewer', ''],
    ];
    for (const [username, display, policy, group] of people) {
      await page.getByLabel('Username').fill(username);
      await page.getByLabel('Display name').fill(display);
      await page.getByLabel('Initial password').fill(PASSWORD);
      await page.getByLabel('Policy').selectOption(policy);
      await page.getByLabel('Group').selectOption(group);
      await page.getByRole('button', { name: 'Create user' }).click();
      await expect(page.locator(`tr[data-username="${username}"]`)).toBeVisible();
    }
    await expect(page.locator('tr[data-username="sofia"]')).toContainText('DataScientist');
    await shot(page, '02-users');
    await page.getByRole('link', { name: 'Compute' }).click();
    await hydrated(page);
    await expect(page.locator('section[data-node="local"]').getByTestId('node-status')).toHaveText('Ready');
    await shot(page, '14-compute');

    // 2. The data scientist uploads the images and starts a labeling job, 2 workers per item.
    const sofia = await userPage(browser, 'sofia', PASSWORD);
    const errors = browserErrors(sofia);
    const images = dataset();
    await sofia.getByRole('link', { name: 'Datasets' }).click();
    await hydrated(sofia);
    await sofia.getByLabel('Name').fill('shapes');
    await sofia.getByLabel('Description').fill('red, green and blue squares');
    await sofia.getByLabel('Kind').selectOption('image');
    await sofia.getByLabel('Files').setInputFiles(images.map((i) => ({ name: i.name, mimeType: 'image/png', buffer: i.buffer })));
    await sofia.getByRole('button', { name: 'Create dataset' }).click();
    await expect(sofia).toHaveURL(/\/datasets\/shapes$/);
    await hydrated(sofia);
    await expect(sofia.getByTestId('item-count')).toHaveText('15');
    await expect(sofia.getByTestId('items').locator('img')).toHaveCount(15);
    await shot(sofia, '03-dataset');

    await sofia.getByRole('link', { name: 'Labeling jobs' }).click();
    await hydrated(sofia);
    await sofia.getByRole('link', { name: 'New labeling job' }).click();
    await hydrated(sofia);
    await sofia.getByLabel('Name').fill('shape-labels');
    await sofia.getByLabel('Dataset').selectOption('shapes');
    await sofia.getByLabel('Task type').selectOption('image_classification');
    await sofia.getByLabel('Label categories').fill('red = r\ngreen = g\nblue = b');
    await sofia.getByLabel('Instructions').fill('Pick the colour of the **square**.');
    await sofia.getByLabel('shape-labelers').check();
    await sofia.getByLabel('Workers per item').fill('2');
    await shot(sofia, '04-new-labeling-job');
    await sofia.getByRole('button', { name: 'Start labeling job' }).click();
    await expect(sofia).toHaveURL(/\/labeling\/shape-labels$/);
    await expect(sofia.getByTestId('job-status')).toHaveText('InProgress');

    // 3. Both labelers label every item from the keyboard, each in their own browser.
    const colourOf = Object.fromEntries(images.map((i) => [i.name, i.colour]));
    for (const [labeler, first] of [['kai', true], ['mina', false]] as const) {
      const p = await userPage(browser, labeler, PASSWORD);
      const seen = browserErrors(p);
      await openWork(p, 'shape-labels');
      let done = 0;
      while (!(await p.getByTestId('idle').isVisible())) {
        const id = await taskId(p);
        const item = ((await p.getByTestId('task').locator('p.muted').textContent()) ?? '').split(': ')[1];
        const colour = colourOf[item];
        expect(colour, `item ${item}`).toBeDefined();
        if (first && done === 0) await shot(p, '05-labeling-task');
        await p.keyboard.press(colour[0]);
        await expect(p.getByRole('button', { name: colour })).toHaveAttribute('aria-pressed', 'true');
        await p.keyboard.press('Enter');
        done += 1;
        await expect(p.getByTestId('session')).toContainText(`${done} tasks this session`);
        await settled(p, id, seen);
      }
      expect(done).toBe(15);
      expect(seen, seen.join('\n')).toEqual([]);
      await p.context().close();
    }
    await sofia.reload();
    await hydrated(sofia);
    await expect(sofia.getByTestId('job-status')).toHaveText('Completed');
    await expect(sofia.getByTestId('job-progress')).toContainText('15 of 15 items labeled · 30 annotations');
    await expect(sofia.getByTestId('quality')).toContainText('kai');
    await shot(sofia, '06-labeling-quality');
    const download = sofia.waitForEvent('download');
    await sofia.getByTestId('download-output').click();
    const { readFileSync } = await import('node:fs');
    const manifest = readFileSync(await (await download).path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(manifest).toHaveLength(15);
    for (const line of manifest) expect(line['shape-labels-metadata']['class-name']).toBe(colourOf[line['source-ref']]);

    // 4. A built-in image classifier trains on the labeling output on the local agent.
    await sofia.getByRole('link', { name: 'Training' }).click();
    await hydrated(sofia);
    await sofia.getByRole('link', { name: 'New training job' }).click();
    await hydrated(sofia);
    await sofia.getByLabel('Name').fill('shapes-1');
    await sofia.getByLabel('Algorithm').selectOption('builtin:image_classification');
    await sofia.locator('#job-train-dataset').selectOption('labeling:shape-labels');
    await sofia.getByLabel('Hyperparameters (JSON)').fill(
      '{"epochs": "60", "batch_size": "8", "learning_rate": "0.01", "image_size": "16", "validation_fraction": "0.2"}',
    );
    await sofia.getByRole('button', { name: 'Start training job' }).click();
    await expect(sofia).toHaveURL(/\/training\/shapes-1$/);
    await hydrated(sofia);
    await expect(sofia.getByTestId('job-state')).toHaveText('Completed', { timeout: 240_000 });
    await expect(sofia.getByTestId('metric-chart').locator('svg').first()).toBeVisible();
    await expect(sofia.getByTestId('metric-chart')).toContainText('train_loss');
    await sofia.getByTestId('metric-chart').first().scrollIntoViewIfNeeded();
    await shot(sofia, '07-training-job');

    // 5. She registers the version; it waits for approval, and she cannot approve it.
    const register = sofia.getByTestId('register-model');
    await register.getByLabel('Model group').fill('shapes');
    await register.getByLabel('Description').fill('colour of the square, trained on shape-labels');
    await register.getByRole('button', { name: 'Register model version' }).click();
    await expect(sofia).toHaveURL(/\/models\/shapes\/versions\/1$/);
    await hydrated(sofia);
    await expect(sofia.getByTestId('version-status')).toHaveText('PendingManualApproval');
    await expect(sofia.getByTestId('lineage')).toContainText('shape-labels');
    await expect(sofia.getByTestId('decision')).toHaveCount(0);
    await shot(sofia, '08-model-version');
    const own = await sofia.request.post('/api/v1/model-groups/shapes/versions/1/approval', { data: { status: 'Approved' } });
    expect(own.status()).toBe(403);

    // 6. The reviewer approves it from her inbox.
    const rosa = await userPage(browser, 'rosa', PASSWORD);
    await expect(rosa.getByTestId('approvals-count')).toHaveText('1');
    await rosa.getByRole('link', { name: /Approvals/ }).click();
    await hydrated(rosa);
    await shot(rosa, '09-approvals');
    await rosa.getByTestId('inbox').getByRole('link', { name: 'shapes v1' }).click();
    await hydrated(rosa);
    await rosa.getByTestId('decision').getByLabel('Comment').fill('separates the three colours');
    await rosa.getByTestId('decision').getByRole('button', { name: 'Approve' }).click();
    await expect(rosa.getByTestId('version-status')).toHaveText('Approved');
    await rosa.context().close();

    // 7. She deploys it, captures every request, and invokes it from the test form.
    await sofia.getByRole('link', { name: 'Endpoints' }).click();
    await hydrated(sofia);
    const form = sofia.getByTestId('new-endpoint');
    await form.getByLabel('Endpoint name').fill('shapes');
    await form.getByLabel('Approved model version').selectOption('shapes:1');
    await form.getByRole('button', { name: 'Create endpoint' }).click();
    await expect(sofia).toHaveURL(/\/endpoints\/shapes$/);
    await hydrated(sofia);
    await expect(sofia.getByTestId('endpoint-status')).toHaveText('InService', { timeout: 90_000 });
    const capture = sofia.getByTestId('capture-form');
    await capture.getByLabel('Capture %').fill('100');
    await capture.getByRole('button', { name: 'Set data capture' }).click();
    await expect(sofia.getByTestId('capture-status')).toContainText('100% of invocations');
    const request = sofia.getByTestId('test-request');
    for (const colour of ['red', 'blue']) {
      const clear = shape(COLOURS[colour], [0.2, 0.2], 0.6);
      await request.getByLabel('Content type').selectOption('application/json');
      await request.getByLabel('Body').fill(JSON.stringify({ instances: [{ b64: b64(clear) }] }));
      await request.getByRole('button', { name: 'Send request' }).click();
      await expect(sofia.getByTestId('test-status')).toHaveText('200');
      await expect(sofia.getByTestId('test-body-out')).toContainText(`"label":"${colour}"`);
    }
    await shot(sofia, '10-endpoint');

    // 8. Monitoring: the invocations are counted and charted; the model monitor takes the
    // training images as its baseline, and inputs from a changed camera (dark, purple,
    // larger) raise drift and constraint violations.
    await expect(sofia.getByTestId('invocation-total')).toHaveText('2', { timeout: 30_000 });
    await expect(sofia.getByTestId('endpoint-charts').locator('svg')).toHaveCount(3);
    const monitor = sofia.getByTestId('monitor-form');
    await monitor.getByLabel('Runs').selectOption('manual');
    await monitor.getByRole('button', { name: 'Set up model monitor' }).click();
    for (const feature of ['mean_red', 'brightness', 'width']) await expect(sofia.getByTestId('baseline')).toContainText(feature);
    for (let i = 0; i < 20; i++) {
      const shifted = shape([150 + i, 30, 170], [0.3, 0.3], 0.3, [35, 10, 55]);
      const answer = await sofia.request.post('/endpoints/shapes/invocations', {
        headers: { 'content-type': 'image/png' },
        data: shifted,
      });
      expect(answer.status(), await answer.text()).toBe(200);
    }
    await expect(sofia.getByTestId('capture-status')).toContainText('22 records', { timeout: 60_000 });
    await sofia.getByRole('button', { name: 'Run monitor now' }).click();
    await expect(sofia.getByTestId('monitor-runs')).toContainText('Completed');
    const report = sofia.getByTestId('drift-report');
    await expect(report.locator('tr[data-feature="brightness"]').getByTestId('drifted')).toHaveText('drifted');
    await expect(report.locator('tr[data-feature="mean_green"]').getByTestId('drifted')).toHaveText('drifted');
    await expect(sofia.getByTestId('violations')).toContainText('brightness');
    await expect(sofia.getByTestId('invocation-total')).toHaveText('22', { timeout: 30_000 });
    await sofia.getByTestId('drift-report').scrollIntoViewIfNeeded();
    await shot(sofia, '11-monitoring');
    expect(errors, errors.join('\n')).toEqual([]);

    // 9. The admin finds all of it in the audit log, the refused approval included.
    const trail: [string, string, string][] = [
      ['admin', 'iam:CreateUser', 'Allow'],
      ['sofia', 'datasets:CreateDataset', 'Allow'],
      ['sofia', 'labeling:CreateLabelingJob', 'Allow'],
      ['sofia', 'training:CreateTrainingJob', 'Allow'],
      // Registering into a new group creates it: the request's record names that first write.
      ['sofia', 'models:CreateModelGroup', 'Allow'],
      ['sofia', 'models:UpdateModelApprovalStatus', 'Deny'],
      ['rosa', 'models:UpdateModelApprovalStatus', 'Allow'],
      ['sofia', 'endpoints:CreateEndpoint', 'Allow'],
      ['sofia', 'endpoints:UpdateEndpoint', 'Allow'],
    ];
    for (const [principal, action, decision] of trail) {
      await page.goto(`/admin/audit?principal=${principal}&action=${encodeURIComponent(action)}`);
      await hydrated(page);
      await expect(page.locator(`tr[data-decision="${decision}"]`, { hasText: action }).first(), `${principal} ${action}`).toBeVisible();
    }
    await page.goto('/admin/audit?action=models:*');
    await hydrated(page);
    await expect(page.locator('tr[data-decision="Deny"]', { hasText: 'models:UpdateModelApprovalStatus' })).toBeVisible();
    await shot(page, '12-audit-log');

    // The notebook journey reads the labeling output with a token of hers.
    sofiaToken = (await ok(await sofia.request.post('/api/v1/tokens', { data: { name: 'notebook' } }))).secret;

    // She deletes the endpoint, which frees its share of the node for the jobs of the
    // tests that follow.
    await sofia.goto('/endpoints/shapes');
    await hydrated(sofia);
    await sofia.getByRole('button', { name: 'Delete endpoint…' }).click();
    await sofia.getByRole('alertdialog').getByRole('button', { name: 'Delete endpoint' }).click();
    await expect
      .poll(async () => (await sofia.request.get('/api/v1/endpoints/shapes')).status(), { timeout: 60_000 })
      .toBe(404);
    await sofia.context().close();
  });

  test('a notebook reads the labeling output manifest and trains a nearest-centroid model in plain Python', async ({ browser, baseURL }) => {
    test.setTimeout(600_000);
    expect(sofiaToken).not.toBe('');
    const sofia = await userPage(browser, 'sofia', PASSWORD);
    const errors = browserErrors(sofia);
    await sofia.getByRole('link', { name: 'Notebooks' }).click();
    await hydrated(sofia);
    await sofia.getByTestId('new-notebook').getByLabel('Name').fill('shapes by hand');
    await sofia.getByRole('button', { name: 'Create' }).click();
    await expect(sofia).toHaveURL(/\/notebooks\/[0-9a-f-]+$/);
    await hydrated(sofia);
    await sofia.getByTestId('start-kernel').click();
    await expect(sofia.getByTestId('kernel-state')).toHaveText('idle', { timeout: 420_000 });

    const sources = [
      // The studio's REST API with her token: the manifest and the dataset's items.
      `import json, struct, urllib.request, zlib
BASE, TOKEN = ${JSON.stringify(baseURL)}, ${JSON.stringify(sofiaToken)}
def get(path):
    request = urllib.request.Request(BASE + path, headers={"Authorization": "Bearer " + TOKEN})
    return urllib.request.urlopen(request).read()
manifest = [json.loads(line) for line in get("/api/v1/labeling/jobs/shape-labels/output").decode().splitlines()]
items = {i["name"]: i["seq"] for i in json.loads(get("/api/v1/datasets/shapes/items?limit=100"))}
print(len(manifest), "labeled items")`,
      // Colour features without any image library: these PNGs use no row filters.
      `def colour(png):
    pos, data = 8, b""
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IHDR":
            w, h = struct.unpack(">II", png[pos + 8:pos + 16])
        if kind == b"IDAT":
            data += png[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(data)
    pixels = [raw[r * (3 * w + 1) + 1 + 3 * x:][:3] for r in range(h) for x in range(w)]
    shape = [p for p in pixels if max(p) - min(p) > 60] or pixels
    return [sum(p[c] for p in shape) / len(shape) for c in range(3)]
X = [colour(get(f"/api/v1/datasets/shapes/items/{items[line['source-ref']]}/content")) for line in manifest]
y = [line["shape-labels-metadata"]["class-name"] for line in manifest]`,
      // The model: one centroid per class.
      `centroids = {c: [sum(x[i] for x, l in zip(X, y) if l == c) / y.count(c) for i in range(3)] for c in set(y)}
predict = lambda x: min(centroids, key=lambda c: sum((a - b) ** 2 for a, b in zip(x, centroids[c])))
accuracy = sum(predict(x) == l for x, l in zip(X, y)) / len(y)
print(f"classes {sorted(centroids)}; training accuracy {accuracy:.2f}; purple is {predict([160, 30, 170])}")`,
    ];
    const cells = sofia.getByTestId('cell');
    for (const [i, source] of sources.entries()) {
      await cells.nth(i).locator('textarea').fill(source);
      await cells.nth(i).locator('textarea').press('Shift+Enter');
      await expect(cells.nth(i).locator('.prompt')).toHaveText(`[${i + 1}]:`, { timeout: 60_000 });
    }
    await expect(cells.nth(0).getByTestId('outputs')).toContainText('15 labeled items');
    await expect(cells.nth(2).getByTestId('outputs')).toContainText("classes ['blue', 'green', 'red']; training accuracy 1.00");
    await expect(cells.nth(2).getByTestId('outputs')).toContainText('purple is');
    await shot(sofia, '13-notebook');
    await sofia.getByRole('button', { name: 'Shut down' }).click();
    await expect(sofia.getByTestId('kernel-state')).toHaveText('stopped');
    expect(errors, errors.join('\n')).toEqual([]);
  });
});
