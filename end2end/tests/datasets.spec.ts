import { test, expect } from '@playwright/test';
import { ADMIN_PASSWORD, hydrated, signIn } from './helpers';

// A real 1x1 PNG.
const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478' +
    '9c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082',
  'hex',
);

test('an image dataset created in the UI uploads with progress, lists what it rejected and shows thumbnails', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Datasets' }).click();
  await hydrated(page);
  await page.getByLabel('Name').fill('ui-pets');
  await page.getByLabel('Description').fill('cats and dogs');
  await page.getByLabel('Kind').selectOption('image');
  await page.getByLabel('Files').setInputFiles([
    { name: 'cat.png', mimeType: 'image/png', buffer: PNG },
    { name: 'dog.png', mimeType: 'image/png', buffer: PNG },
    { name: 'fake.png', mimeType: 'image/png', buffer: Buffer.from('<svg onload="alert(1)"/>') },
  ]);
  await page.getByRole('button', { name: 'Create dataset' }).click();

  await expect(page).toHaveURL(/\/datasets\/ui-pets$/);
  await hydrated(page);
  await expect(page.getByTestId('item-count')).toHaveText('2');
  const batches = page.getByTestId('batches');
  await expect(batches).toContainText('3 files: cat.png, dog.png, fake.png');
  await batches.getByText('1 rejected').click();
  await expect(batches).toContainText('fake.png: not a PNG, JPEG or WebP image');
  // The thumbnails are the stored images, decoded by the browser.
  const thumbnails = page.getByTestId('items').locator('img');
  await expect(thumbnails).toHaveCount(2);
  await expect.poll(() => thumbnails.first().evaluate((img: HTMLImageElement) => img.naturalWidth)).toBe(1);

  // Appending a batch: the page updates in place.
  await page.getByTestId('add-files').getByLabel('Files').setInputFiles([
    { name: 'bird.png', mimeType: 'image/png', buffer: PNG },
  ]);
  await page.getByRole('button', { name: 'Upload' }).click();
  await expect(page.getByTestId('batch-summary')).toContainText('Batch 2: 1 items added');
  await expect(page.getByTestId('item-count')).toHaveText('3');
  await expect(thumbnails).toHaveCount(3);

  await page.locator('[data-item="3"]').click();
  await expect(page.getByRole('heading', { name: 'Item 3 · bird.png' })).toBeVisible();
  await expect(page.getByRole('link', { name: '← Previous' })).toBeVisible();
});

test('a text dataset shows snippets and whole texts, escaped', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.goto('/datasets');
  await hydrated(page);
  await page.getByLabel('Name').fill('ui-reviews');
  await page.getByLabel('Kind').selectOption('text');
  await page.getByLabel('CSV text column').fill('review');
  await page.getByLabel('Files').setInputFiles([
    { name: 'reviews.csv', mimeType: 'text/csv', buffer: Buffer.from('id,review\n1,Loved it\n2,<img src=x onerror=alert(1)>\n') },
  ]);
  await page.getByRole('button', { name: 'Create dataset' }).click();
  await expect(page).toHaveURL(/\/datasets\/ui-reviews$/);
  await hydrated(page);
  await expect(page.getByTestId('item-count')).toHaveText('2');
  const items = page.getByTestId('items');
  await expect(items).toContainText('Loved it');
  // Markup in a text is shown as text, never run.
  await expect(items).toContainText('<img src=x onerror=alert(1)>');
  await expect(items.locator('img')).toHaveCount(0);
  await page.locator('[data-item="2"]').click();
  await expect(page.getByTestId('item-text')).toHaveText('<img src=x onerror=alert(1)>');
});

test('removing an item and deleting a dataset ask first: Cancel keeps them, confirming removes them', async ({ page }) => {
  await signIn(page, 'admin', ADMIN_PASSWORD);
  const created = await page.request.post('/api/v1/datasets', { data: { name: 'ui-doomed', kind: 'image' } });
  expect(created.status()).toBe(201);
  const uploaded = await page.request.post('/api/v1/datasets/ui-doomed/batches', {
    multipart: {
      file: { name: 'a.png', mimeType: 'image/png', buffer: PNG },
    },
  });
  expect(uploaded.status()).toBe(201);
  const second = await page.request.post('/api/v1/datasets/ui-doomed/batches', {
    multipart: {
      file: { name: 'b.png', mimeType: 'image/png', buffer: PNG },
    },
  });
  expect(second.status()).toBe(201);
  await page.goto('/datasets/ui-doomed');
  await hydrated(page);
  await expect(page.getByTestId('item-count')).toHaveText('2');
  const dialog = page.getByRole('alertdialog');

  // Removing item 1: Cancel keeps it; confirming removes it, and item 2 keeps its number.
  const removeFirst = page.getByTestId('remove-item').first();
  await removeFirst.click();
  await expect(dialog).toContainText('Remove item 1 (a.png) from dataset ui-doomed?');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await expect(dialog).toBeHidden();
  await expect(page.getByTestId('item-count')).toHaveText('2');
  await removeFirst.click();
  await dialog.getByRole('button', { name: 'Remove item' }).click();
  await expect(page.getByTestId('item-count')).toHaveText('1');
  await expect(page.locator('[data-item="1"]')).toHaveCount(0);
  await expect(page.locator('[data-item="2"]')).toBeVisible();

  // Deleting the dataset names it and what goes; Cancel keeps it.
  const trigger = page.getByTestId('delete-dataset');
  await trigger.click();
  await expect(dialog).toContainText('Delete dataset ui-doomed?');
  await expect(dialog).toContainText('Its 1 item and their files');
  await expect(dialog.getByRole('button', { name: 'Cancel' })).toBeFocused();
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await expect(dialog).toBeHidden();
  expect((await page.request.get('/api/v1/datasets/ui-doomed')).status()).toBe(200);

  // Confirming deletes it and goes back to the list.
  await trigger.click();
  await dialog.getByRole('button', { name: 'Delete dataset' }).click();
  await expect(page).toHaveURL(/\/datasets$/);
  expect((await page.request.get('/api/v1/datasets/ui-doomed')).status()).toBe(404);
  await expect(page.getByRole('link', { name: 'ui-doomed' })).toHaveCount(0);
});
