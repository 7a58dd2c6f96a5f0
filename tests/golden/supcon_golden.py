"""Independent reference for the golden test (tests/suite/reference.rs, tests/suite/implementations.rs).

Plain-Python, float64 transcription of the SupCon loss as the reference PyTorch code computes
it (view-major flattening, L2-normalised rows, contrast_mode "all", L_out, mean over all
anchors). It shares no code with the Rust reference. Run: python3 tests/golden/supcon_golden.py
"""
import math

BSZ, N_VIEWS, DIM = 6, 2, 5
TAU = BASE_TAU = 0.07

features = [[[math.sin(0.37 * (b + 1) * (k + 1) + 0.11 * v) + 0.1 * math.cos(1.3 * b - 0.7 * k + v)
              for k in range(DIM)] for v in range(N_VIEWS)] for b in range(BSZ)]
labels = [b % 3 for b in range(BSZ)]

# torch.cat(torch.unbind(features, dim=1), dim=0): all view-0 rows, then all view-1 rows.
rows = [features[b][v] for v in range(N_VIEWS) for b in range(BSZ)]
row_labels = [labels[b] for v in range(N_VIEWS) for b in range(BSZ)]
rows = [[x / max(math.sqrt(sum(y * y for y in r)), 1e-12) for x in r] for r in rows]

n = len(rows)
total = 0.0
for i in range(n):
    logits = [sum(a * c for a, c in zip(rows[i], rows[j])) / TAU for j in range(n)]
    m = max(logits)
    log_denominator = m + math.log(sum(math.exp(logits[j] - m) for j in range(n) if j != i))
    positives = [j for j in range(n) if j != i and row_labels[j] == row_labels[i]]
    if positives:
        mean_log_prob = sum(logits[p] - log_denominator for p in positives) / len(positives)
        total += -(TAU / BASE_TAU) * mean_log_prob
print(repr(total / n))
