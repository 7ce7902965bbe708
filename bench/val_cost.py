"""What one validation costs, against one training step, for the CPU recipe's model (issue 14: `--val-chars`).

Runs the CPU recipe's LSTM and batch (`charrnn.run.RECIPES['cpu']`: since stop 29, 2×448 with LayerNorms on
32 × 64; a 2×384 LSTM on 32 × 100 when the issue-14 figures were taken) on tiny Shakespeare: for each N given,
one validation of the first N characters of the validation text, between two timings of training steps of the
recipe. It prints seconds of CPU (process time, so a busy machine changes the figures little; run it with
OMP_NUM_THREADS=1, so that no thread spins) and the ratio: how many training steps one validation of N
characters costs.

    OMP_NUM_THREADS=1 python bench/val_cost.py 16385 111539
"""
import sys, time

import torch

from charrnn.batching import eval_batcher
from charrnn.model import CharModel
from charrnn.run import RECIPES, prepare_text
from charrnn.training import TrainConfig, evaluate
from charrnn.runlearner import RunLearner
from charrnn.precision import bf16_supported

prepared = prepare_text('tinyshakespeare')  # the vocabulary, training ids, validation ids, facts
vocab = prepared[0]
train_ids, val_ids = prepared[1:3]
r = RECIPES['cpu']
torch.manual_seed(0)
model = CharModel(vocab, **r['model'])
cfg = TrainConfig(**{**r['train'], 'time_limit': None, 'max_steps': 10**6})
learn = RunLearner(model, train_ids, val_ids, cfg, quiet=True)
print(f"torch threads {torch.get_num_threads()}, bf16 {bf16_supported(torch.device('cpu'))}", flush=True)


def step_seconds(k:int=5) -> float:
    "CPU seconds of one training step of the recipe, the mean of `k` (after one to warm up)."
    learn.train_step(*learn.batcher()[0])
    t = time.process_time()
    for i in range(k): learn.train_step(*learn.batcher()[i + 1])
    return (time.process_time() - t) / k


evaluate(model, eval_batcher(val_ids[:20_000]))  # warm up
for n in [int(a) for a in sys.argv[1:]] or [16_385, 111_539]:
    b = eval_batcher(val_ids[:n])
    s0 = step_seconds()
    t = time.process_time()
    evaluate(model, b)
    t = time.process_time() - t
    s = (s0 + step_seconds()) / 2
    chars = b.batch_size * b.n
    print(f"N={n:>9,}: {chars:>9,} characters scored ({b.batch_size} streams × {b.n}); "
          f"validation {t:6.2f} s CPU, {t / chars * 1e6:5.1f} µs per character; "
          f"a training step {s * 1e3:5.0f} ms CPU; one validation = {t / s:5.1f} steps", flush=True)
