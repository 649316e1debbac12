"""The peer a competitor writes by hand: a plain timm + torchvision loop, about 80 lines.

AdamW (lr 3e-3, wd 0.05), one-cycle with a 25% rise, label smoothing 0.1, RandomResizedCrop(0.5-1) from the
original image, horizontal and vertical flips, colour jitter; validation and test images are resized to the
training size. It trains on the rows of folds.csv outside --fold and validates on that fold (the split medal
used), then predicts the test images of sample_submission.csv, writes the submission, and only then reads
solution.csv to score it. Prints one JSON line: valid and test accuracy, wall seconds.

    python3 benchmarks/peers/timm_loop.py --data ../shared/data/flowers --folds FOLDS.csv --out DIR
"""
import argparse
import json
import time
from pathlib import Path

import pandas as pd
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T


class Images(torch.utils.data.Dataset):
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB")), self.labels[i]


def predict(model, loader):
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x).softmax(1) for x, _ in loader])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--folds", type=Path, required=True, help="medal's folds.csv: image_id, label, fold")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    started = time.perf_counter()
    torch.manual_seed(a.seed)
    folds = pd.read_csv(a.folds, dtype={"image_id": str, "label": str})
    classes = sorted(folds["label"].unique())
    index = {c: i for i, c in enumerate(classes)}
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.RandomResizedCrop(a.size, scale=(0.5, 1.0)), T.RandomHorizontalFlip(),
                          T.RandomVerticalFlip(), T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize((a.size, a.size)), T.ToTensor(), norm])

    def loader(rows, folder, tf, shuffle):
        paths = [str(a.data / folder / i) for i in rows["image_id"]]
        labels = [index.get(label, -1) for label in rows["label"]]
        return torch.utils.data.DataLoader(Images(paths, labels, tf), a.batch, shuffle=shuffle,
                                           num_workers=a.workers, drop_last=shuffle)

    train_dl = loader(folds[folds["fold"] != a.fold], "train", train_tf, True)
    valid_rows = folds[folds["fold"] == a.fold]
    valid_dl = loader(valid_rows, "train", eval_tf, False)
    model = timm.create_model(a.backbone, pretrained=False, num_classes=len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.epochs * len(train_dl), pct_start=0.25)
    for epoch in range(a.epochs):
        model.train()
        for x, y in train_dl:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        valid = (predict(model, valid_dl).argmax(1).numpy() == valid_rows["label"].map(index).to_numpy()).mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, valid accuracy {valid:.4f}", flush=True)

    sample = pd.read_csv(a.data / "sample_submission.csv", dtype=str)
    test = predict(model, loader(sample.assign(label=classes[0]), "test", eval_tf, False))
    a.out.mkdir(parents=True, exist_ok=True)
    submission = sample.assign(label=[classes[k] for k in test.argmax(1).tolist()])
    submission.to_csv(a.out / "submission.csv", index=False)
    truth = pd.read_csv(a.data / "solution.csv", dtype=str).set_index("image_id")["label"]
    test_acc = (submission.set_index("image_id")["label"] == truth.loc[submission["image_id"]]).mean()
    print(json.dumps({"recipe": "timm loop", "valid": float(valid), "test": float(test_acc),
                      "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
