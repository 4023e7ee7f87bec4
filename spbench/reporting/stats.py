"""Intervals and paired comparisons of SST-2 dev accuracy, from per-example predictions.

The dev split has 872 sentences: at 85% accuracy its own sampling error is about 1.2 points,
larger than many gaps between methods, and seed spread alone does not show it. Every finished
accuracy run stores its dev predictions (``Result.predictions``), so:

- a configuration's accuracy is the mean over its seeds, with a 95% interval from a bootstrap
  over dev examples: each sentence's correctness averaged over the seeds is resampled
  (``scipy.stats.bootstrap``, percentile method). The seeds are held fixed, so the interval is
  "these trained models, other sentences like dev's"; the seed spread is shown beside it.
- two configurations scored on the same sentences are compared paired: the difference of
  their per-sentence correctness (averaged over seeds), its 95% paired bootstrap interval, and
  a two-sided p-value from a sign-flip permutation test of the mean difference
  (``scipy.stats.permutation_test``, ``permutation_type="samples"``; with one seed each, this
  is McNemar's exact test on the discordant sentences, up to Monte-Carlo error).

Predictions are joined only when they come from the same examples (a hash of dev's sentences
and labels in every record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from spbench.errors import InputError

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0  # the resampling is seeded: a report renders the same figures every time
ALPHA = 0.05


def correctness(predictions: Sequence[dict[str, Any]]) -> tuple[Any, str]:
    """(seeds x examples) 0/1 array of which dev examples each run got right, and the examples' hash.

    Raises InputError when the runs scored different examples.
    """
    import numpy as np

    digests = {p.get("sha256") for p in predictions}
    if len(digests) != 1:
        raise InputError(f"these runs scored different dev examples (hashes {', '.join(sorted(map(str, digests)))})")
    rows = []
    for p in predictions:
        labels, predicted = p["labels"], p["predicted"]
        if len(labels) != len(predicted) or not labels:
            raise InputError(f"malformed predictions: {len(predicted)} predictions for {len(labels)} labels")
        rows.append(np.frombuffer(labels.encode(), dtype=np.uint8) == np.frombuffer(predicted.encode(), dtype=np.uint8))
    return np.asarray(rows, dtype=float), digests.pop()


def interval(correct: Any, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """95% bootstrap interval over examples of the mean accuracy of ``correct`` (seeds x examples)."""
    import numpy as np
    from scipy import stats

    per_example = np.asarray(correct, dtype=float).mean(axis=0)
    if np.all(per_example == per_example[0]):  # nothing to resample: every draw is the same
        return float(per_example[0]), float(per_example[0])
    res = stats.bootstrap((per_example,), np.mean, confidence_level=confidence, n_resamples=RESAMPLES,
                          method="percentile", rng=np.random.default_rng(SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class Paired:
    """B - A on the same examples: mean difference of accuracy, its interval, the p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    examples: int
    seeds: tuple[int, int]

    @property
    def distinguishable(self) -> bool:
        return self.p_value < ALPHA and not self.low <= 0.0 <= self.high

    def verdict(self, a: str, b: str) -> str:
        if not self.distinguishable:
            return "not distinguishable from noise at this size"
        return f"{b} better" if self.difference > 0 else f"{a} better"

    def text(self, a: str, b: str) -> str:
        """``+0.92 pp [-0.34, +2.18], p = 0.15: not distinguishable from noise at this size``."""
        return (f"{self.difference * 100:+.2f} pp [{self.low * 100:+.2f}, {self.high * 100:+.2f}], "
                f"p = {self.p_value:.3g}: {self.verdict(a, b)}")


def paired(correct_a: Any, correct_b: Any, confidence: float = CONFIDENCE) -> Paired:
    """Compare two configurations scored on the same examples (each seeds x examples)."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"paired comparison needs the same examples: {a.shape[1]} vs {b.shape[1]}")
    d = b.mean(axis=0) - a.mean(axis=0)
    seeds = (a.shape[0], b.shape[0])
    if not np.any(d):  # identical per-example scores: no difference, and no evidence of one
        return Paired(0.0, 0.0, 0.0, 1.0, len(d), seeds)
    rng = np.random.default_rng(SEED)
    boot = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=RESAMPLES,
                           method="percentile", rng=rng)
    test = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=RESAMPLES,
                                  alternative="two-sided", rng=rng)
    return Paired(float(d.mean()), float(boot.confidence_interval.low), float(boot.confidence_interval.high),
                  float(test.pvalue), len(d), seeds)


METHOD_NOTE = (f"intervals: {int(CONFIDENCE * 100)}% bootstrap over dev examples ({RESAMPLES:,} resamples of "
               "each sentence's correctness averaged over seeds; seeds held fixed); paired differences: the same "
               "bootstrap on per-sentence differences, p from a sign-flip permutation test (scipy.stats)")
