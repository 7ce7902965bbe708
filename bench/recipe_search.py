"""The CPU recipe search (issue 23 item 2): which default gets tiny Shakespeare lowest in 180 s on 2 cores.

Each candidate is a set of `charrnn train` settings (width, depth, batch, sequence length, learning rate and
schedule, dropout, weight decay) trained on tiny Shakespeare (90/10 split, as `charrnn train
tinyshakespeare`), one after another in this process, each for the same budget: `--budget` seconds of
training (`time_limit`, what the default recipe uses; meaningful only on an otherwise idle machine), or
`--steps` steps (load-independent, for comparing candidates whose step times were measured on an idle
machine). A validation every `--eval-every` steps scores `--val-chars` characters; the table reports each
candidate's best validation loss, the steps done and the seconds taken.

Only settings the model and trainer already have are searched. Variational (locked) dropout, weight-dropped
(DropConnect) recurrent weights and a layer-normalised LSTM cell, which issue 23 also lists, need a model
that has them (nbs/02_model.ipynb); added there as `ModelConfig` fields, they become candidates here by name.

    python bench/recipe_search.py                        # the search: ~180 s a candidate, on an idle machine
    python bench/recipe_search.py --budget 10 --only 2   # a smoke run: two candidates, 10 s each
    python bench/recipe_search.py --steps 1100 --only 1  # one candidate for a fixed number of steps
"""
import argparse, json, os, time

import torch
from _common import machine, emit, table
from charrnn.run import train

BASE = dict(hidden=384, layers=2, dropout=0.0, batch_size=32, seq_len=100, lr=3e-3, schedule='cosine',
            warmup=50)
CANDIDATES = [  # changes from BASE (the current CPU recipe); the first is the recipe itself
    {},
    dict(hidden=256),
    dict(hidden=512),
    dict(layers=1, hidden=512),
    dict(lr=4e-3),
    dict(lr=2e-3),
    dict(batch_size=64, lr=4e-3),
    dict(batch_size=16, lr=2e-3),
    dict(seq_len=64),
    dict(seq_len=150),
    dict(dropout=0.1),
    dict(weight_decay=0.01),
    dict(schedule='constant'),
    dict(warmup=200),
    dict(hidden=320, seq_len=64, batch_size=48, lr=4e-3),
]

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--budget', type=float, default=175, help='seconds of training a candidate (the recipe: 175)')
ap.add_argument('--steps', type=int, default=None, help='a fixed number of steps a candidate, not --budget')
ap.add_argument('--eval-every', type=int, default=250)
ap.add_argument('--val-chars', type=int, default=250_000)
ap.add_argument('--only', type=int, default=None, help='run the first N candidates only')
ap.add_argument('--device', default='cpu')
a = ap.parse_args()
info = machine(); info.update(load_before=os.getloadavg()); emit(dict(figure='machine', **info))
limit = dict(max_steps=a.steps) if a.steps else dict(time_limit=a.budget)
rows = []
for i, change in enumerate(CANDIDATES[:a.only]):
    settings = {**BASE, **change}
    t = time.perf_counter()
    learn = train('tinyshakespeare', out=None, device=a.device, quiet=True, eval_every=a.eval_every,
                  val_chars=a.val_chars, seed=0, **limit, **settings)
    row = dict(candidate=i, change=json.dumps(change) if change else 'the recipe', steps=learn.step,
               seconds=round(time.perf_counter() - t, 1), best_val=round(learn.best_val, 4),
               best_step=learn.best_step)
    emit(dict(figure='recipe_search', settings=settings, **row)); rows.append(row)
budget = f'{a.steps} steps' if a.steps else f'{a.budget:g} s'
print()
print(f"Recipe search on tiny Shakespeare, {info['cpu']}, {info['cores']} cores, "
      f"{torch.get_num_threads()} torch thread(s), {budget} a candidate; "
      f"load average {info['load_before'][0]:.2f} before, {os.getloadavg()[0]:.2f} after")
cols = ['candidate', 'change', 'steps', 'seconds', 'best_val', 'best_step']
print(table(sorted(rows, key=lambda r: r['best_val']), cols))
