import { test, expect, type Page } from '@playwright/test';
import { ADMIN_PASSWORD, browserErrors, hydrated, ok, signIn, userPage } from './helpers';

// Destructive and privileged actions ask first, naming what will happen; nothing
// dangerous is a default.

const PASSWORD = 'safety-user-password-1';

/** The open confirmation dialog. */
function dialog(page: Page) {
  return page.getByRole('alertdialog');
}

test('deactivating a user asks first, naming them: Escape and Cancel leave them active, Confirm deactivates', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  const errors = browserErrors(page);
  await ok(await page.request.post('/api/v1/users', { data: { username: 'sol', password: PASSWORD, policies: ['ReadOnly'] } }));
  await page.goto('/admin/users/sol');
  await hydrated(page);
  const trigger = page.getByRole('button', { name: 'Deactivate' });

  // Escape cancels; focus goes back to the button.
  await trigger.click();
  await expect(dialog(page)).toBeVisible();
  await expect(dialog(page)).toContainText('Deactivate user sol?');
  await expect(dialog(page)).toContainText('signed out everywhere');
  // No dangerous default: Cancel has the focus.
  await expect(dialog(page).getByRole('button', { name: 'Cancel' })).toBeFocused();
  await page.keyboard.press('Escape');
  await expect(dialog(page)).toBeHidden();
  await expect(trigger).toBeFocused();

  // Cancel (Enter on the focused button) leaves the user as they were.
  await trigger.click();
  await page.keyboard.press('Enter');
  await expect(dialog(page)).toBeHidden();
  expect((await ok(await page.request.get('/api/v1/users/sol'))).active).toBe(true);
  await expect(page.getByText('Active ·')).toBeVisible();

  // Confirm does it.
  await trigger.click();
  await dialog(page).getByRole('button', { name: 'Deactivate user' }).click();
  await expect(page.getByText('Deactivated ·')).toBeVisible();
  expect((await ok(await page.request.get('/api/v1/users/sol'))).active).toBe(false);
  expect(errors).toEqual([]);
});

test('the attach-policy choice starts empty and refuses none; detaching and deleting a group ask first', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  const errors = browserErrors(page);
  await ok(await page.request.post('/api/v1/users', { data: { username: 'tess', password: PASSWORD } }));
  await page.goto('/admin/users/tess');
  await hydrated(page);

  // Nothing is chosen until the admin chooses; attaching nothing is a field error.
  const choice = page.getByLabel('Policy to attach');
  await expect(choice).toHaveValue('');
  await expect(choice.locator('option:checked')).toHaveText('Choose a policy…');
  await page.getByRole('button', { name: 'Attach policy' }).click();
  await expect(page.getByText('Choose a policy to attach.')).toBeVisible();
  await expect(page.getByTestId('user-policies')).not.toContainText('AdministratorAccess');

  await choice.selectOption('Labeler');
  await page.getByRole('button', { name: 'Attach policy' }).click();
  const labeler = page.getByTestId('user-policies').locator('li[data-policy="Labeler"]');
  await expect(labeler).toBeVisible();

  // Detach asks, naming the policy and the user.
  await labeler.getByRole('button', { name: 'Detach' }).click();
  await expect(dialog(page)).toContainText('Detach policy Labeler from tess?');
  await dialog(page).getByRole('button', { name: 'Cancel' }).click();
  await expect(dialog(page)).toBeHidden();
  await expect(labeler).toBeVisible();
  await labeler.getByRole('button', { name: 'Detach' }).click();
  await dialog(page).getByRole('button', { name: 'Detach policy' }).click();
  await expect(page.getByTestId('user-policies').locator('li[data-policy="Labeler"]')).toHaveCount(0);
  expect((await ok(await page.request.get('/api/v1/users/tess'))).policies ?? []).not.toContain('Labeler');

  // A group: its attach choice starts empty too, and deleting it asks.
  await ok(await page.request.post('/api/v1/groups', { data: { name: 'safety-team' } }));
  await page.goto('/admin/groups/safety-team');
  await hydrated(page);
  await expect(page.getByLabel('Policy to attach')).toHaveValue('');
  await page.getByRole('button', { name: 'Delete group' }).click();
  await expect(dialog(page)).toContainText('Delete group safety-team?');
  await dialog(page).getByRole('button', { name: 'Cancel' }).click();
  expect((await page.request.get('/api/v1/groups/safety-team')).status()).toBe(200);
  await page.getByRole('button', { name: 'Delete group' }).click();
  await dialog(page).getByRole('button', { name: 'Delete group' }).click();
  await expect(page).toHaveURL(/\/admin\/groups$/);
  expect((await page.request.get('/api/v1/groups/safety-team')).status()).toBe(404);
  expect(errors).toEqual([]);
});

test('deleting an endpoint asks first, naming it and what it serves, from the danger zone below the test request; alarms are refused twice, shown firing, muted and deleted', async ({ page, browser }) => {
  test.setTimeout(240_000);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await ok(await page.request.post('/api/v1/users', { data: { username: 'sid', password: PASSWORD, policies: ['DataScientist'] } }));
  await ok(await page.request.post('/api/v1/users', { data: { username: 'remy', password: PASSWORD, policies: ['Reviewer'] } }));
  // An endpoint needs an approved version; an uploaded file is enough for the page (the
  // deployment itself need not succeed).
  const sid = await userPage(browser, 'sid', PASSWORD);
  const errors = browserErrors(sid);
  const upload = await ok(await sid.request.post('/api/v1/artifacts?name=model.tar.gz', { data: Buffer.from('not really a model') }));
  await ok(await sid.request.post('/api/v1/model-groups', { data: { name: 'safety-model' } }));
  await ok(await sid.request.post('/api/v1/model-groups/safety-model/versions', {
    data: { artifact: upload.id, inference: { serving_command: 'python3 serve.py' } },
  }));
  const remy = await userPage(browser, 'remy', PASSWORD);
  await ok(await remy.request.post('/api/v1/model-groups/safety-model/versions/1/approval', { data: { status: 'Approved' } }));
  await remy.context().close();
  await ok(await sid.request.post('/api/v1/endpoints', {
    data: { name: 'fraud-prod', variants: [{ model_group: 'safety-model', model_version: 1, instance_count: 1 }] },
  }));

  // An alarm; the same name again is refused, naming it.
  const alarms = '/api/v1/endpoints/fraud-prod/alarms';
  await ok(await sid.request.post(alarms, { data: { name: 'errors', metric: 'errors_5xx', comparison: 'ge', threshold: 5 } }));
  const again = await sid.request.post(alarms, { data: { name: 'errors', metric: 'errors_5xx', comparison: 'ge', threshold: 1 } });
  expect(again.status()).toBe(409);
  expect((await again.json()).error.message).toContain('errors');
  const wrong = await sid.request.post(alarms, { data: { name: 'other', metric: 'errors_5xx', comparison: 'ge', threshold: 'high' } });
  expect(wrong.status()).toBe(422);
  expect((await wrong.json()).error.field).toBe('threshold');

  // An alarm that goes off on the next minute's evaluation: no traffic is 0 invocations.
  await ok(await sid.request.post(alarms, { data: { name: 'quiet', metric: 'invocations', comparison: 'le', threshold: 0 } }));
  await expect
    .poll(async () => ((await ok(await sid.request.get(alarms))) as { name: string; state: string }[]).find((a) => a.name === 'quiet')?.state, { timeout: 150_000 })
    .toBe('ALARM');
  // Shown on the endpoints list and at the top of the endpoint page.
  await sid.goto('/endpoints');
  await hydrated(sid);
  await expect(sid.locator('tr[data-endpoint="fraud-prod"]').getByTestId('firing-alarms')).toContainText('quiet firing');

  await sid.goto('/endpoints/fraud-prod');
  await hydrated(sid);
  await expect(sid.getByTestId('firing-banner')).toContainText('quiet is firing');
  // Muted, it no longer shows as firing.
  await sid.getByTestId('alarms').locator('tr[data-alarm="quiet"]').getByRole('button', { name: 'Mute' }).click();
  await expect(sid.getByTestId('alarms').locator('tr[data-alarm="quiet"]').getByTestId('alarm-state')).toHaveText('ALARM (muted)');
  await expect(sid.getByTestId('firing-banner')).toHaveCount(0, { timeout: 20_000 });

  // The delete button is in the danger zone, after the test request, not above it.
  const remove = sid.getByRole('button', { name: 'Delete endpoint…' });
  await expect(remove).toBeVisible();
  const below = await sid.evaluate(() => {
    const test = document.querySelector('[data-testid="test-request"]');
    const zone = document.querySelector('[data-testid="danger-zone"]');
    return !!test && !!zone && !!(test.compareDocumentPosition(zone) & Node.DOCUMENT_POSITION_FOLLOWING);
  });
  expect(below).toBe(true);

  // The alarm form: the same name is refused on the page too; the alarm is muted, then
  // deleted after a confirmation.
  const form = sid.getByTestId('alarm-form');
  await form.getByLabel('Name').fill('errors');
  await form.getByLabel('Threshold').fill('2');
  await form.getByRole('button', { name: 'Add alarm' }).click();
  await expect(form.getByRole('alert')).toContainText('already has an alarm named errors');
  const row = sid.getByTestId('alarms').locator('tr[data-alarm="errors"]');
  await row.getByRole('button', { name: 'Mute' }).click();
  await expect(row.getByTestId('alarm-state')).toContainText('(muted)');
  await expect(row.getByRole('button', { name: 'Unmute' })).toBeVisible();
  await row.getByRole('button', { name: 'Delete' }).click();
  await expect(dialog(sid)).toContainText('Delete alarm errors of endpoint fraud-prod?');
  await dialog(sid).getByRole('button', { name: 'Delete alarm' }).click();
  await expect(sid.getByTestId('alarms').locator('tr[data-alarm="errors"]')).toHaveCount(0);

  // Cancel leaves the endpoint; the dialog names it and what it serves.
  await remove.click();
  await expect(dialog(sid)).toContainText('Delete endpoint fraud-prod?');
  await expect(dialog(sid)).toContainText('It serves 1 variant (safety-model v1); traffic stops');
  await expect(dialog(sid).getByRole('button', { name: 'Cancel' })).toBeFocused();
  await dialog(sid).getByRole('button', { name: 'Cancel' }).click();
  await expect(dialog(sid)).toBeHidden();
  expect((await sid.request.get('/api/v1/endpoints/fraud-prod')).status()).toBe(200);

  // Confirm deletes it and goes back to the list.
  await remove.click();
  await dialog(sid).getByRole('button', { name: 'Delete endpoint' }).click();
  await expect(sid).toHaveURL(/\/endpoints$/);
  await expect.poll(async () => (await sid.request.get('/api/v1/endpoints/fraud-prod')).status()).toBe(404);
  expect(errors).toEqual([]);
  await sid.context().close();
});

test('deleting a notebook asks first, naming it and what goes with it', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  const errors = browserErrors(page);
  const notebook = await ok(await page.request.post('/api/v1/notebooks', { data: { name: 'safety-scratch' } }));
  await page.goto('/notebooks');
  await hydrated(page);
  const row = page.locator('tr[data-notebook="safety-scratch"]');
  await row.getByRole('button', { name: 'Delete' }).click();
  await expect(dialog(page)).toContainText('Delete notebook safety-scratch?');
  await expect(dialog(page)).toContainText('go for good');
  await dialog(page).getByRole('button', { name: 'Cancel' }).click();
  await expect(dialog(page)).toBeHidden();
  await ok(await page.request.get(`/api/v1/notebooks/${notebook.id}`));

  await row.getByRole('button', { name: 'Delete' }).click();
  await dialog(page).getByRole('button', { name: 'Delete notebook' }).click();
  await expect(row).toHaveCount(0);
  expect((await page.request.get(`/api/v1/notebooks/${notebook.id}`)).status()).toBe(404);
  expect(errors).toEqual([]);
});
