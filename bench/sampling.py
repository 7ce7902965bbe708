"""Sampling speed: characters per second for the lesson's 3×512 LSTM, charrnn against the original lesson.

The issue-23 measurement: one stream (batch 1), 4,000 characters, top-k 3, temperature 1, seed 1, random
weights (speed does not depend on them). Each round measures, back to back so that they share the load:

  lesson            bench/lesson_baseline.py --no-train, in a subprocess: the lesson's predict_next_char
                    loop (one-hot on the host, nn.LSTM, softmax, top-k, numpy draw), timed by its own
                    timer around its sampling loop only
  fast              charrnn's fast decoder (fp32: exactly the forward pass's text), in this process
  fast int8         the same with Sampler(weights='int8') (CPU only: int8 weights, slightly different text)
  forward pass      charrnn's plain path (fast=False: the model's own forward pass, one step at a time)
  charrnn generate  the whole `charrnn generate CKPT --length N --top-k 3 --temperature 1 --seed 1`
                    process, start-up (imports, loading the checkpoint) included, timed from outside

and each charrnn figure is divided by the lesson's of the same round. The table gives the medians over
rounds of the characters per second and of those ratios. Batch 64 rows (fast vs forward pass) follow,
without a lesson figure (the lesson samples one stream at a time). Threads: torch's default unless
OMP_NUM_THREADS is set, the same on both sides. The load average before and after is printed: on a
shared machine, quote the ratios.

    OMP_NUM_THREADS=1 python bench/sampling.py [--chars 4000] [--rounds 3] [--device cpu|cuda]
"""
import argparse, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from _common import machine, emit, table, run_baseline, sync, CORPUS
from charrnn.checkpoint import save
from charrnn.core import get_device
from charrnn.encoding import Vocab, read_text
from charrnn.generation import Sampler, generate_ids
from charrnn.model import CharModel

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--device', default='auto')
ap.add_argument('--chars', type=int, default=4000)
ap.add_argument('--rounds', type=int, default=3)
ap.add_argument('--batch64-chars', type=int, default=500)
a = ap.parse_args()
device = get_device(a.device)
info = machine()
info.update(OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS'), load_before=os.getloadavg())
emit(dict(figure='machine', **info))
torch.manual_seed(0)
model = CharModel(Vocab.from_text(read_text(CORPUS)), hidden=512, layers=3, dropout=0.5).to(device).eval()
rule = dict(temperature=1.0, top_k=3)
impls = {'fast': dict(fast=True), 'forward pass': dict(fast=False)}
if device.type == 'cpu': impls['fast int8'] = dict(fast=True, weights='int8')


def chars_per_s(n:int, batch:int=1, fast:bool=True, weights:str='fp32') -> float:
    "charrnn's sampling rate in this process (after a warm-up of 64 characters)."
    s = Sampler(**rule, weights=weights)
    generate_ids(model, 'The ', 64, num_samples=batch, seed=1, sampler=s, fast=fast)
    sync(device)
    t = time.perf_counter()
    generate_ids(model, 'The ', n, num_samples=batch, seed=1, sampler=s, fast=fast)
    sync(device)
    return n * batch / (time.perf_counter() - t)


def whole_cli(ckpt:Path, n:int) -> float:
    "Characters per second of the whole `charrnn generate` process, start-up included."
    cmd = [sys.executable, '-m', 'charrnn', 'generate', str(ckpt), '--length', str(n), '--top-k', '3',
           '--temperature', '1', '--seed', '1', '--device', str(device)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return n / (time.perf_counter() - t)


rounds = []
with tempfile.TemporaryDirectory() as tmp:
    ckpt = save(model.cpu(), Path(tmp)/'lstm3x512.safetensors')
    model.to(device)
    for r in range(a.rounds):
        got = {'lesson': run_baseline(gen=a.chars, gpu=device.type == 'cuda', train=False)['gen_chars_per_s']}
        for name, kw in impls.items(): got[name] = chars_per_s(a.chars, **kw)
        got['charrnn generate (whole process)'] = whole_cli(ckpt, a.chars)
        emit(dict(figure='sampling_round', round=r, batch=1, chars=a.chars,
                  **{k: round(v) for k, v in got.items()}))
        rounds.append(got)

rows = []
for name in rounds[0]:
    cps = statistics.median(g[name] for g in rounds)
    ratio = statistics.median(g[name] / g['lesson'] for g in rounds)
    rows.append(dict(impl=name, batch=1, chars_per_s=round(cps), vs_lesson_same_round=f'{ratio:.2f}×'))
for fast in (False, True):
    cps = chars_per_s(a.batch64_chars, 64, fast)
    rows.append(dict(impl='fast' if fast else 'forward pass', batch=64, chars_per_s=round(cps)))
for row in rows: emit(dict(figure='sampling', device=str(device), **row))
load = (info['load_before'][0], os.getloadavg()[0])
print()
print(f"Sampling, 3×512 LSTM (random weights), {a.chars:,} characters, top-k 3, temperature 1, seed 1; "
      f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
      f"{torch.get_num_threads()} torch thread(s)"
      + (f", {info['gpu']}" if 'gpu' in info else '')
      + f"; median of {a.rounds} rounds; load average {load[0]:.2f} before, {load[1]:.2f} after")
print(table(rows, ['impl', 'batch', 'chars_per_s', 'vs_lesson_same_round']))
