"""Sampling speed: characters per second at batch 1 and batch 64 for the lesson's 3×512 LSTM, charrnn vs the lesson.

charrnn is measured two ways, both giving the same text for the same seed: the model's own forward pass one step at a
time (`fast=False`) and the decoder built for sampling (`fast=True`, the default; a CUDA graph on GPU), both with
`Sampler(temperature=1, top_k=3)`, the lesson's rule. The lesson's code
samples one stream at a time (top-k 3, numpy); it runs in the same invocation. Prints JSON lines and a table.

    python bench/sampling.py [--device cpu|cuda] [--chars 500]
"""
import argparse, time
import torch
from _common import machine, emit, table, run_baseline, sync, CORPUS
from charrnn.encoding import Vocab, read_text
from charrnn.model import CharModel
from charrnn.core import get_device
from charrnn.generation import Sampler, generate_ids

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--device', default='auto'); ap.add_argument('--chars', type=int, default=500)
ap.add_argument('--no-baseline', action='store_true')
a = ap.parse_args()
device = get_device(a.device)
info = machine(); emit(dict(figure='machine', **info))
torch.manual_seed(0)
model = CharModel(Vocab.from_text(read_text(CORPUS)), hidden=512, layers=3, dropout=0.5).to(device).eval()
rule = Sampler(temperature=1.0, top_k=3)
rows = []
for batch in (1, 64):
    for fast in (False, True):
        n = a.chars if batch == 1 else max(100, a.chars // 2)
        generate_ids(model, 'The ', 64, num_samples=batch, seed=0, sampler=rule, fast=fast)  # warm-up (and graph capture)
        sync(device); t = time.perf_counter()
        generate_ids(model, 'The ', n, num_samples=batch, seed=0, sampler=rule, fast=fast)
        sync(device); dt = time.perf_counter() - t
        r = dict(figure='sampling', impl=f"charrnn ({'fast' if fast else 'forward pass'})", device=str(device), batch=batch,
                 chars_per_s=round(n * batch / dt))
        emit(r); rows.append(r)
if not a.no_baseline:
    base = run_baseline(steps=1, gen=a.chars, gpu=device.type == 'cuda')
    r = dict(figure='sampling', impl='original lesson', device=base['device'], batch=1, chars_per_s=base['gen_chars_per_s'])
    emit(r); rows.append(r)
    for row in rows: row['vs_lesson_batch1'] = f"{row['chars_per_s'] / base['gen_chars_per_s']:.1f}×"
print()
print(f"Sampling, 3×512 LSTM, top-k 3, {info['cpu']}, {info['cores']} cores, torch {info['torch']}"
      + (f", {info['gpu']}" if 'gpu' in info else '') + " (the lesson samples one stream at a time)")
print(table(rows, ['impl', 'device', 'batch', 'chars_per_s', 'vs_lesson_batch1']))
