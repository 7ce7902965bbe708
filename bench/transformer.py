"""LSTM vs Transformer (lesson 07's race): about equal parameters, equal wall-clock, tiny Shakespeare.

An LSTM 2×256 and a Transformer of 4 blocks of width 128 (4 heads, context 128), about 0.85M parameters each,
trained by the same `Learner` on the same windows (32 × 128 characters), lr 3e-3, fp32, each for `--budget`
seconds (validation included: the first 50,000 characters of the validation split, read as a stream, every 50
steps). Then: the validation loss the nanoGPT way (windows of 128 characters, each from nothing), sampling
speed at batch 1 through each model's forward pass (each step's fastest of 3 runs; the LSTM's fast decoder:
best of 3), time per character early and late in the context, and the state each carries. Tiny Shakespeare
comes from the copy inside the package; nothing outside the repository is read. Prints JSON lines, then
markdown tables.

    python bench/transformer.py [--budget 120] [--chars 1100]
"""
import argparse, math, time
import torch
from _common import machine, emit, table
from charrnn.data import get_corpus
from charrnn.encoding import Vocab, read_text
from charrnn.batching import split_data, eval_batcher
from charrnn.model import CharModel, num_params, bits_per_char
from charrnn.training import TrainConfig
from charrnn.runlearner import RunLearner
from charrnn.resilience import TimeLimitCB
from charrnn.generation import Sampler, generate_ids
from charrnn.transformer import state_bytes, step_times
import torch.nn.functional as F

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--budget', type=float, default=120, help='seconds of training for each model (default 120)')
ap.add_argument('--chars', type=int, default=1100, help='characters to time sampling (default 1100)')
a = ap.parse_args()
emit(dict(figure='machine', **machine()))

text = read_text(get_corpus('tinyshakespeare'))
vocab = Vocab.from_text(text)
train_ids, val_ids = split_data(vocab.encode(text).long())
SHAPES = {'LSTM 2×256': dict(cell='lstm', hidden=256, layers=2),
          'Transformer 4×128': dict(cell='transformer', hidden=128, layers=4, heads=4, context=128)}


def fresh(kw):
    "A model of shape `kw`, the same weights every time."
    torch.manual_seed(0)
    return CharModel(vocab, dropout=0., **kw)


@torch.inference_mode()
def window_loss(model, ids, T=128):
    "The mean loss over windows of `T` characters, each read from an empty state (nanoGPT's way of scoring)."
    b, total = eval_batcher(ids, T, 64), 0.
    for x, y in b:
        total += F.cross_entropy(model.eval()(x)[0].flatten(0, 1), y.flatten(), reduction='sum').item()
    return total / (b.batch_size * b.n)


rows, speed_rows = [], []
for name, kw in SHAPES.items():
    cfg = TrainConfig(seq_len=128, batch_size=32, lr=3e-3, warmup=50, eval_every=50, val_chars=50_000,
                      time_limit=a.budget, precision='fp32')
    learn = RunLearner(fresh(kw), train_ids, val_ids, cfg, cbs=[TimeLimitCB()], quiet=True)
    learn.fit()
    r = dict(figure='race', model=name, params=num_params(learn.model), seconds=round(learn.elapsed, 1),
             steps=learn.step, ms_per_step=round(1000 * learn.elapsed / learn.step),
             best_val=round(learn.best_val, 4), bits_per_char=round(bits_per_char(learn.best_val), 3),
             windows_128=round(window_loss(learn.model, val_ids[:50_000]), 4),
             evals=[(e['step'], e['elapsed'], round(e['val_loss'], 4)) for e in learn.history.evals])
    emit(r)
    rows.append(r)

models = {n: fresh(kw) for n, kw in SHAPES.items()}
models['Transformer 4×128, context 1024'] = fresh(SHAPES['Transformer 4×128'] | dict(context=1024))
for name, model in models.items():
    step_times(model, 20)  # warm-up
    t, sizes = step_times(model, a.chars, repeats=3)  # each step's fastest of 3 runs: past the machine's load
    at = lambda p: round(1000 * sum(t[p - 16:p]) / 16, 3)
    r = dict(figure='sampling', model=name, path='forward pass', chars_per_s=round(a.chars / sum(t)),
             ms_at_1_16=at(16), ms_at_113_128=at(128), ms_at_1009_1024=at(1024) if a.chars >= 1024 else '',
             state_kib_max=max(sizes) / 1024)
    emit(r)
    speed_rows.append(r)
lstm = models['LSTM 2×256'].eval()
generate_ids(lstm, '\n', 100, seed=0)  # warm-up
best = math.inf
for _ in range(3):
    t0 = time.perf_counter()
    generate_ids(lstm, '\n', a.chars, seed=0, sampler=Sampler(temperature=0.8))
    best = min(best, time.perf_counter() - t0)
r = dict(figure='sampling', model='LSTM 2×256', path='fast decoder', chars_per_s=round(a.chars / best),
         state_kib_max=state_bytes(lstm.init_hidden(1)) / 1024)
emit(r)
speed_rows.append(r)

print(f"\nTraining for {a.budget:g} s each (validation included), tiny Shakespeare 90/10, batch 32 × 128, "
      "lr 3e-3, fp32:\n")
print(table(rows, ['model', 'params', 'steps', 'ms_per_step', 'best_val', 'bits_per_char', 'windows_128']))
print('\nSampling at batch 1 (greedy through the forward pass; the fast decoder at temperature 0.8):\n')
print(table(speed_rows, ['model', 'path', 'chars_per_s', 'ms_at_1_16', 'ms_at_113_128', 'ms_at_1009_1024',
                         'state_kib_max']))
