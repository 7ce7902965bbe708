"""N-gram baselines: how long `NGramLM` takes to count and to score, and the suffix-array match search,
on tiny Shakespeare.

For each order: the seconds to fit on the training split (the first 90%, 1,003,854 characters) and to score
the validation split (111,540 characters), and the validation bits/char. Then `match_lengths` of 40 held-out
stretches of 500 characters against the training text (a suffix array over about 1.02 M characters). Best of
`--repeat` runs. Prints JSON lines and a table.

    OMP_NUM_THREADS=1 python bench/ngram.py [--orders 1-10] [--repeat 3] [--text PATH]
"""
import argparse, time
import numpy as np
from _common import machine, emit, table, summary, CORPUS
from charrnn.encoding import Vocab, read_text
from charrnn.batching import split_data
from charrnn.ngram import NGramLM, match_lengths

ap = argparse.ArgumentParser(description=summary(__doc__))
ap.add_argument('--orders', default='1-10')
ap.add_argument('--repeat', type=int, default=3)
ap.add_argument('--text', default=str(CORPUS))
a = ap.parse_args()
lo, hi = map(int, a.orders.split('-'))
emit(dict(figure='machine', **machine()))
text = read_text(a.text)
vocab = Vocab.from_text(text)
train, val = (x.numpy() for x in split_data(vocab.encode(text), 0.1))

def best(fn, n):
    "The result of `fn()` and its best time over `n` runs."
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)

rows = []
for order in range(lo, hi + 1):
    lm, fit_s = best(lambda: NGramLM(order, len(vocab)).fit(train), a.repeat)
    bits, score_s = best(lambda: lm.bits_per_char(val), a.repeat)
    r = dict(figure='ngram', order=order, train_chars=len(train), fit_s=round(fit_s, 3), val_chars=len(val),
             score_s=round(score_s, 3), fit_mchars_per_s=round(len(train) / fit_s / 1e6, 2),
             bits_per_char=round(bits, 4))
    emit(r)
    rows.append(r)
qs = [val[i * 500:(i + 1) * 500] for i in range(40)]
lens, match_s = best(lambda: match_lengths(train, qs), a.repeat)
emit(dict(figure='match_lengths', train_chars=len(train), query_chars=sum(map(len, qs)),
          seconds=round(match_s, 3), median_longest=float(np.median([l.max() for l in lens]))))
print(table(rows, ['order', 'fit_s', 'fit_mchars_per_s', 'score_s', 'bits_per_char']))
print(f'match_lengths: {len(train) + 20_000:,} chars in {match_s:.2f} s')
