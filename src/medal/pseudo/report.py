"""pseudo_<name>/report.md: the rows added per class, and how confident the kept and all test rows are."""
from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd

from medal.core.report import Document

# Confidence bins of the histogram table: most of a useful table sits above 0.9, so the top is finer.
BINS = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]


def pseudo_document(summary: dict, probs: np.ndarray, keep: np.ndarray) -> Document:
    """The report of a pseudo-label selection (pseudo.json's `summary`, the N x C test probabilities, the kept rows)."""
    rule = (f"top-class probability at least **{summary['threshold']}**" if summary["rule"] == "threshold" else
            f"per predicted class, its most confident **{summary['top_fraction']:g}** (rounded up)")
    doc = Document(f"pseudo-labels {summary['name']!r}")
    doc.text(f"From blend `{summary['blend']}` (`{summary['source']}`): {summary['rows']} of {summary['test_rows']} test "
             f"rows kept, {rule}; {'soft labels (one probability per class)' if summary['soft'] else 'hard labels'}.",
             f"Train on them with `train.pseudo_labels={summary['table']}`: they join the training side of every fold, "
             "never validation, so the CV is still measured on real labels only.")
    per_class = pd.DataFrame({"predicted": summary["predicted_per_class"], "added": summary["per_class"],
                              "lowest confidence added": {c: "-" if v is None else v for c, v
                                                          in summary["lowest_confidence_kept"].items()}}).rename_axis("class")
    doc.heading("Rows added per class").table(per_class)
    conf = probs.max(axis=1)
    edges = [f"{lo:g}-{hi:g}" for lo, hi in pairwise(BINS)]
    histogram = pd.DataFrame({"test rows": np.histogram(conf, BINS)[0], "added": np.histogram(conf[keep], BINS)[0]},
                             index=pd.Index(edges, name="top-class probability"))
    doc.heading("Confidence").table(histogram)
    kept, every = summary["confidence_kept"], summary["confidence_all"]
    doc.text(f"Top-class probability of the rows added: min {kept['min']:.4f}, median {kept['median']:.4f}, "
             f"max {kept['max']:.4f}; of every test row: min {every['min']:.4f}, median {every['median']:.4f}.")
    return doc
