"""The built-in tabular MLP's twin in PyTorch, for the throughput comparison in
`cargo bench -p atelier-agent --bench tabular`: same CSV, same preprocessing
(standardized numeric features), same network (hidden layers of ReLU units, linear
output), Adam, same batch size and epochs, and per epoch the same extra work (a
validation pass and a checkpoint). Prints `samples_per_sec=<n>`."""
import csv, os, random, sys, tempfile, time

import torch

path, epochs, batch, hidden, layers, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
torch.manual_seed(42)
rows = list(csv.reader(open(path)))[1:]
random.Random(42).shuffle(rows)
held = round(len(rows) * 0.2)
train, valid = rows[held:], rows[:held]
classes = sorted({r[-1] for r in rows})
def encode(rs):
    x = torch.tensor([[float(v) for v in r[:-1]] for r in rs], dtype=torch.float32)
    y = torch.tensor([classes.index(r[-1]) for r in rs], dtype=torch.long)
    return x, y
x, y = encode(train)
vx, vy = encode(valid)
mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-12)
x, vx = (x - mean) / std, (vx - mean) / std
modules, width = [], x.shape[1]
for _ in range(layers):
    modules += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
    width = hidden
modules.append(torch.nn.Linear(width, len(classes)))
model = torch.nn.Sequential(*modules)
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
loss_fn = torch.nn.CrossEntropyLoss()
ckpt = os.path.join(tempfile.mkdtemp(), "model.pt")
samples = 0
start = time.perf_counter()
for epoch in range(epochs):
    order = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        samples += len(idx)
    with torch.no_grad():
        accuracy = (model(vx).argmax(1) == vy).float().mean().item()
    torch.save(model.state_dict(), ckpt)
    print(f"epoch={epoch + 1} loss={loss.item():.4f} validation_accuracy={accuracy:.4f}", file=sys.stderr)
print(f"samples_per_sec={samples / (time.perf_counter() - start):.1f}")
