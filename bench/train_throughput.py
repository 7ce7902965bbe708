"""Training throughput at the original lesson's configuration: charrnn vs the lesson's own code, same run.

The lesson's configuration: 3 LSTM layers of 512 units, dropout 0.5, batch 128, windows of 100 characters,
input as wide as the vocabulary (the lesson's one-hot vectors; charrnn looks the same rows up with an
embedding of width V). Both run on tiny Shakespeare, one after the other, in this invocation. Prints a JSON
line per figure and a table.

    python bench/train_throughput.py [--device cpu|cuda] [--steps 10]
"""
import argparse, statistics, time
import torch
from _common import machine, emit, table, run_baseline, sync
from charrnn.run import prepare_text
from charrnn.training import TrainConfig, seed_everything
from charrnn.runlearner import RunLearner
from charrnn.precision import bf16_supported
from charrnn.model import CharModel
from charrnn.core import get_device

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--device', default='auto')
ap.add_argument('--steps', type=int, default=10)
ap.add_argument('--no-baseline', action='store_true')
a = ap.parse_args()
device = get_device(a.device)
info = machine()
emit(dict(figure='machine', **info))
prepared = prepare_text('tinyshakespeare')  # the vocabulary, training ids, validation ids, facts
vocab = prepared[0]
train_ids, val_ids = prepared[1:3]
rows = []
# forced bf16 fails where oneDNN lacks it
precisions = ('fp32', 'bf16') if bf16_supported(device) else ('fp32',)
for precision in precisions:
    seed_everything(0)
    model = CharModel(vocab, hidden=512, layers=3, dropout=0.5).to(device)  # emb_dim = V, like one-hot
    cfg = TrainConfig(batch_size=128, seq_len=100, precision=precision, max_steps=10**6)
    tr = RunLearner(model, train_ids, val_ids, cfg, quiet=True)
    b = tr.batcher()
    times = []
    for i in range(a.steps + 2):
        x, y = b[i]
        sync(device)
        t = time.perf_counter()
        loss = tr.train_step(x, y)
        loss.item()  # read the loss, as the lesson does each step
        sync(device)
        times.append(time.perf_counter() - t)
        tr.step += 1
    ms = 1000 * statistics.median(times[2:])
    r = dict(figure='train_throughput', impl=f'charrnn ({precision})', device=str(device),
             ms_per_step=round(ms, 1), chars_per_s=round(128 * 100 / (ms / 1000)))
    emit(r)
    rows.append(r)
if not a.no_baseline:
    base = run_baseline(steps=a.steps, gen=50, gpu=device.type == 'cuda')
    r = dict(figure='train_throughput', impl='original lesson', device=base['device'],
             ms_per_step=base['train_ms_per_step'], chars_per_s=base['train_chars_per_s'])
    emit(r)
    rows.append(r)
    for row in rows: row['vs_lesson'] = f"{row['chars_per_s'] / base['train_chars_per_s']:.2f}×"
    emit(dict(figure='train_throughput_ratio', **{row['impl']: row['vs_lesson'] for row in rows}))
print()
print(f"Training throughput, lesson config (3×512 LSTM, dropout 0.5, batch 128, seq 100), {info['cpu']}, "
      f"{info['cores']} cores, torch {info['torch']}" + (f", {info['gpu']}" if 'gpu' in info else ''))
print(table(rows, ['impl', 'device', 'ms_per_step', 'chars_per_s', 'vs_lesson']))
