"""Fine-tuning learning rate: the bundled model fine-tuned on the sonnets at several learning rates.

Each run is `charrnn.run.train('sonnets', init_from='bundled', lr=LR, ...)` with the CPU recipe's batches (32
windows of 100 characters), 50 warm-up steps and cosine decay over `--steps`, validated every 25 steps on the
sonnets' last tenth (9,573 characters). Prints a JSON line per run and a table: the validation loss before any
step, the best one and its step, and the last. `charrnn.run.FINE_TUNE_LR` is the best of these.

    OMP_NUM_THREADS=1 python bench/finetune_lr.py [--lrs 3e-4 1e-3 2e-3 3e-3] [--steps 200] [--device cpu]

Measured 2026-11-29 on the shared 2-core CPU (load ~10, one thread each; the same runs, `grow_vocab` +
`Learner` with these settings, as a script before this one existed; this script reproduces step 0 to the
printed digit, 1.649):

| lr | val_step0 | best_val | best_step | last_val (step 200) |
|---|---|---|---|---|
| 3e-4 | 1.649 | 1.4406 | 200 | 1.4406 |
| 1e-3 | 1.649 | 1.4001 | 200 | 1.4001 |
| 3e-3 | 1.649 | 1.4008 | 75 | 1.4157 |

1e-3 ends lowest; 3e-3 gets nearly as low at step 75, then rises as it forgets; 3e-4 is still 0.04 above at
step 200.

Again on 2026-12-04 (stop 27), after the CPU recipe's cosine decay changed from 10% to 0 (fine-tuned runs
take it), on the idle 2-core machine, 2 threads, bf16 (`python bench/finetune_lr.py`, load 0.79 before, 1.83
after):

| lr | val_step0 | best_val | best_step | last_val (step 200) |
|---|---|---|---|---|
| 3e-4 | 1.649 | 1.447 | 200 | 1.447 |
| 1e-3 | 1.649 | 1.402 | 200 | 1.402 |
| 2e-3 | 1.649 | 1.395 | 100 | 1.397 |
| 3e-3 | 1.649 | 1.394 | 100 | 1.403 |

2e-3 now ends 0.005 below 1e-3, from one run each: less than the 0.008-0.019 that seeds moved the recipe
search, so `FINE_TUNE_LR` stays 1e-3, the rate whose loss still falls at the end.
"""
import argparse, time
from _common import machine, emit, table
from charrnn.batching import eval_batcher
from charrnn.checkpoint import bundled_model
from charrnn.run import train
from charrnn.training import evaluate
from charrnn.transfer import grow_vocab

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--lrs', type=float, nargs='+', default=[3e-4, 1e-3, 2e-3, 3e-3])
ap.add_argument('--steps', type=int, default=200)
ap.add_argument('--device', default='cpu')
a = ap.parse_args()
emit(dict(figure='machine', **machine()))
rows = []
for lr in a.lrs:
    t = time.perf_counter()
    learn = train('sonnets', init_from='bundled', device=a.device, lr=lr, max_steps=a.steps, eval_every=25,
                  batch_size=32, seq_len=100, quiet=True)
    before = grow_vocab(bundled_model(), learn.model.vocab).to(learn.device)  # the model before any step
    start = evaluate(before, eval_batcher(learn.val_ids), learn.cfg.precision)
    last = learn.history.evals[-1]['val_loss']
    r = dict(figure='finetune_lr', lr=lr, steps=a.steps, val_step0=round(start, 4),
             best_val=round(learn.best_val, 4), best_step=learn.best_step, last_val=round(last, 4),
             seconds=round(time.perf_counter() - t))
    emit(r)
    rows.append(r)
print()
print(table(rows, ['lr', 'val_step0', 'best_val', 'best_step', 'last_val', 'seconds']))
