"""The model as a compressor (lesson 08): `charrnn.compress` against gzip, bzip2, xz and n-grams; its speed.

On tiny Shakespeare's validation split (the last 10%, 111,539 characters, as training splits it), with the
bundled model: the compressed file's size in bits per character (header included) and the characters per
second of compress and decompress, for each `--streams` count (the round trip is checked); then gzip -9,
bzip2 -9 and xz -9e (Python's modules) on the split alone and given the training split (train+val compressed,
minus train alone), and lesson 05's interpolated Kneser-Ney n-grams fitted on the training split (their ideal
code length, best of `--orders`). Reads only the corpus and the model that ship inside the package. Prints
JSON lines and a table.

    OMP_NUM_THREADS=1 python bench/compress.py [--streams 16,64,256] [--orders 4-8]
"""
import argparse, gzip, time
from _common import machine, emit, table
from charrnn.batching import split_data
from charrnn.compress import CLASSIC, classic_bits
from charrnn.compressed import coder_model, compress, decompress
from charrnn.data import CORPORA, CORPORA_DIR
from charrnn.ngram import NGramLM
from charrnn.model import bits_per_char

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--streams', default='16,64,256', help='stream counts to measure, comma-separated')
ap.add_argument('--orders', default='4-8', help='n-gram orders, lo-hi')
a = ap.parse_args()
emit(dict(figure='machine', **machine()))
text = gzip.decompress((CORPORA_DIR/CORPORA['tinyshakespeare'].embedded).read_bytes()).decode('utf-8')
train, val = split_data(text, 0.1)
model, sha = coder_model('bundled')
val_bits = bits_per_char(model.summary['best_val_loss'])
rows = []
for streams in map(int, a.streams.split(',')):
    t = time.perf_counter()
    data = compress(model, val, sha, streams)
    c_s = time.perf_counter() - t
    t = time.perf_counter()
    ok = decompress(model, data, sha) == val
    d_s = time.perf_counter() - t
    bpc = 8 * len(data) / len(val)
    r = dict(figure='lstm', method=f'LSTM (bundled), {streams} streams', val_chars=len(val), bytes=len(data),
             bits_per_char=round(bpc, 4), vs_val_loss=f'{100 * (bpc / val_bits - 1):+.2f}%',
             compress_chars_per_s=round(len(val) / c_s), decompress_chars_per_s=round(len(val) / d_s),
             round_trip=ok)
    emit(r)
    rows.append(r)
    if not ok: raise SystemExit(f'round trip failed with {streams} streams')
alone, given = classic_bits(val), classic_bits(val, given=train)
for k in CLASSIC:
    r = dict(figure='classic', method=k, bits_per_char=round(given[k], 4),
             alone_bits_per_char=round(alone[k], 4))
    emit(r)
    rows.append(r)
lo, hi = map(int, a.orders.split('-'))
ids = lambda s: model.vocab.encode(s).long().numpy()
grams = {n: NGramLM(n, len(model.vocab)).fit(ids(train)).bits_per_char(ids(val)) for n in range(lo, hi + 1)}
best = min(grams, key=grams.get)
emit(dict(figure='ngram', orders={n: round(b, 4) for n, b in grams.items()}))
rows.append(dict(method=f'Kneser-Ney {best}-gram (ideal length)', bits_per_char=round(grams[best], 4)))
print(f'validation split: {len(val):,} characters; the model\'s validation loss: {val_bits:.4f} bits/char')
print(table(rows, ['method', 'bits_per_char', 'alone_bits_per_char', 'vs_val_loss', 'compress_chars_per_s',
                   'decompress_chars_per_s']))
