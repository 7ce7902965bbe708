"""The CPU recipe search (issue 23 item 2): which settings get tiny Shakespeare lowest in a fixed wall time.

Each candidate is a set of `charrnn.run.train` settings (width, depth, batch, sequence length, learning rate
and schedule, dropout, weight decay; only fields `ModelConfig` and `TrainConfig` already have) trained on tiny
Shakespeare (the package's copy, 90/10 split, as `charrnn train tinyshakespeare`) for `--seconds` of wall time
(`time_limit`) from seed 0 (or `--seed`). Every candidate is a change to the first CPU recipe (`FIRST`: 2×384,
batch 32 × 100, lr 3e-3, cosine decay to 0.1), so that a candidate's number keeps its meaning when the recipe
changes; candidate 0 is that recipe itself, the control. The search's winner, candidate 24, was
`charrnn.run.recipe` from stop 27; since stop 29 the recipe is candidate 30 (LayerNorms between the layers,
2×448, found with bench/recipe_tweaks.py): the header says which candidate the current recipe is.

Candidates run side by side, `--parallel` at a time, each in its own process pinned to its own
`--cores-per` CPU cores (`os.sched_setaffinity`, with `OMP_NUM_THREADS` and torch's threads set to match and
`CUDA_VISIBLE_DEVICES=''`), so that on a machine with 16 idle cores eight candidates each get two cores, as
the recipe's 2-core target does. A line is printed per candidate as it ends (its settings, steps, best
validation loss in nats) and the whole table at the end; `--out` receives `results.json` (the machine, the
recipe, every candidate's settings and result, each validation) and `results.csv`.

    python bench/recipe_search.py --out runs/search     # 32 candidates, 180 s each, cores/2 at a time
    python bench/recipe_search.py --out /tmp/smoke --parallel 1 --cores-per 1 --seconds 5 --candidates 2 \\
        --eval-every 20 --val-chars 5000                              # a smoke run (no figures worth quoting)

Time-limited runs measure the machine as much as the recipe: run the search on an otherwise idle machine, and
quote its figures with the load average it prints. It needs torch, numpy, safetensors, fastcore and
fastprogress (what `import charrnn.run` imports), and no GPU.
"""
import argparse, csv, json, os, subprocess, sys, time
from pathlib import Path

import torch
from _common import machine, emit, table
from charrnn.run import recipe

RECIPE = recipe(torch.device('cpu'))   # {'model': {...}, 'train': {...}}: what `charrnn train` uses on a CPU
# the first CPU recipe, which the candidates change (it had no LayerNorms: `norm` is named so that the
# current recipe's does not leak into it)
FIRST = dict(model=dict(hidden=384, layers=2, dropout=0.0, norm=False),
             train=dict(batch_size=32, seq_len=100, lr=3e-3, final_lr_frac=0.1, time_limit=175,
                        eval_every=250))
CHANGES = [  # each candidate's changes to FIRST; the first, none, is FIRST itself (the control)
    {},
    dict(lr=2e-3),
    dict(lr=5e-3),
    dict(schedule='constant'),
    dict(warmup=200, final_lr_frac=0.0),
    dict(final_lr_frac=0.3),
    dict(batch_size=16, lr=2e-3),
    dict(batch_size=64, lr=4e-3),
    dict(seq_len=64),
    dict(seq_len=160),
    dict(hidden=256),
    dict(hidden=512, lr=2e-3),
    dict(hidden=512, layers=1),
    dict(hidden=320, layers=3),
    dict(dropout=0.1),
    dict(weight_decay=0.05, dropout=0.1),
    # added after the first search (issue 23, stop 26): the two best changes together, and a cheaper cell
    dict(lr=5e-3, seq_len=64),
    dict(cell='gru', lr=5e-3),
    dict(lr=5e-3, seq_len=64, batch_size=48),
    dict(cell='gru', lr=5e-3, seq_len=64, hidden=448),
    dict(lr=7e-3, seq_len=64),
    dict(lr=5e-3, seq_len=64, hidden=256, layers=3),
    dict(lr=5e-3, seq_len=64, batch_size=64),
    dict(lr=5e-3, seq_len=48),
    dict(lr=5e-3, seq_len=64, final_lr_frac=0.0),
    dict(lr=6e-3, seq_len=64, final_lr_frac=0.0),
    dict(lr=4e-3, seq_len=64, final_lr_frac=0.0),
    # added at stop 27: the width of candidate 24 (the current recipe), narrower for more steps and wider
    dict(lr=5e-3, seq_len=64, final_lr_frac=0.0, hidden=320),
    dict(lr=5e-3, seq_len=64, final_lr_frac=0.0, hidden=448),
    # added at stop 29: LayerNorms between the layers (`norm`, found with bench/recipe_tweaks.py), then wider
    dict(lr=5e-3, seq_len=64, final_lr_frac=0.0, norm=True),
    dict(lr=5e-3, seq_len=64, final_lr_frac=0.0, norm=True, hidden=448),
    dict(lr=7e-3, seq_len=64, final_lr_frac=0.0, norm=True, hidden=448),
]


def settings_of(change:dict, # a candidate's changes
                recipe:dict=FIRST) -> dict: # the recipe they change
    "`recipe`'s model and training settings with `change` applied (length, validations: the flags)."
    base = {**recipe['model'], **recipe['train']}
    for k in ('time_limit', 'max_steps', 'epochs', 'eval_every'): base.pop(k, None)   # set by the flags
    return {**base, **change}


def current() -> list:
    "The numbers of the candidates that train with the current recipe's settings (`charrnn.run.recipe`)."
    return [i for i, c in enumerate(CHANGES) if settings_of(c) == settings_of({}, RECIPE)]


def best_of(learn) -> dict:
    "The best validation loss of a finished learner, its step, and every validation as (step, loss)."
    evals = [(e['step'], e['val_loss']) for e in learn.history.evals if e.get('val_loss') is not None]
    if not evals: return dict(best_val=float('nan'), best_step=0, evals=[])
    step, loss = min(evals, key=lambda e: e[1])
    return dict(best_val=loss, best_step=step, evals=evals)


def worker(job:dict):
    "One candidate, in this process: pin it to its cores, train it, print its result as the last JSON line."
    os.sched_setaffinity(0, job['cores'])
    torch.set_num_threads(len(job['cores']))
    from charrnn.run import train
    t = time.perf_counter()
    learn = train('tinyshakespeare', out=None, device='cpu', quiet=True, seed=job['seed'],
                  time_limit=job['seconds'],
                  eval_every=job['eval_every'], val_chars=job['val_chars'], precision=job['precision'],
                  **job['settings'])
    print(json.dumps(dict(steps=learn.step, **best_of(learn),
                          wall_s=round(time.perf_counter() - t, 1), threads=torch.get_num_threads())))


def launch(job:dict) -> subprocess.Popen:
    "Start `job` in a child process with its threads and cores set, no GPU visible."
    n = str(len(job['cores']))
    env = {**os.environ, 'OMP_NUM_THREADS': n, 'MKL_NUM_THREADS': n, 'CUDA_VISIBLE_DEVICES': ''}
    return subprocess.Popen([sys.executable, __file__, '--worker', json.dumps(job)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def result_of(job:dict, proc:subprocess.Popen) -> dict:
    "The finished child's result, merged with its job (an error line if it failed)."
    out, err = proc.communicate()
    change = json.dumps(job['change']) if job['change'] else 'the first recipe'
    row = dict(candidate=job['candidate'], change=change,
               cores=','.join(map(str, job['cores'])), settings=job['settings'])
    if proc.returncode != 0 or not out.strip():
        return {**row, 'error': (err.strip().splitlines() or ['no output'])[-1]}
    return {**row, **json.loads(out.strip().splitlines()[-1])}


def run_all(jobs:list, slots:list) -> list:
    "Run `jobs`, one per free core set in `slots`, printing a line as each ends; the results in job order."
    waiting, running = list(jobs), {}
    done = []
    while waiting or running:
        while waiting and len(running) < len(slots):
            free = next(s for s in slots if s not in [j['cores'] for j, _ in running.values()])
            job = {**waiting.pop(0), 'cores': free}
            running[job['candidate']] = (job, launch(job))
        for k, (job, proc) in list(running.items()):
            if proc.poll() is None: continue
            row = result_of(job, running.pop(k)[1])
            done.append(row)
            keys = ('candidate', 'change', 'settings', 'steps', 'best_val', 'best_step', 'wall_s', 'error')
            line = {c: row.get(c) for c in keys}
            print(json.dumps({k: v for k, v in line.items() if v is not None}), flush=True)
        time.sleep(0.2)
    return sorted(done, key=lambda r: r['candidate'])


def write(out:Path, info:dict, rows:list):
    "results.json (everything) and results.csv (a row per candidate) in `out`."
    out.mkdir(parents=True, exist_ok=True)
    (out/'results.json').write_text(json.dumps(dict(machine=info, recipe=RECIPE, candidates=rows), indent=1))
    cols = ['candidate', 'change', 'steps', 'best_val', 'best_step', 'wall_s', 'cores', 'error']
    with open(out/'results.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, cols, extrasaction='ignore')
        w.writeheader()
        w.writerows(rows)


def main(a):
    "The search: the candidates in parallel (the control first), then the table and the files."
    cores = sorted(os.sched_getaffinity(0))
    slots = [cores[i:i + a.cores_per] for i in range(0, len(cores) - a.cores_per + 1, a.cores_per)]
    slots = slots[:a.parallel or len(slots)]
    info = machine()
    info.update(load_before=os.getloadavg(), slots=slots, seconds=a.seconds, precision=a.precision,
                seed=a.seed)
    emit(dict(figure='machine', **info))
    emit(dict(figure='recipe', **RECIPE, candidate=current()))
    jobs = [dict(candidate=i, change=c, settings=settings_of(c), seconds=a.seconds, eval_every=a.eval_every,
                 val_chars=a.val_chars, precision=a.precision, seed=a.seed)
            for i, c in enumerate(CHANGES[:a.candidates])]
    if a.only: jobs = [j for j in jobs if j['candidate'] in {int(i) for i in a.only.split(',')}]
    rows = run_all(jobs, slots)
    info['load_after'] = os.getloadavg()
    write(Path(a.out), info, rows)
    print()
    print(f"Recipe search on tiny Shakespeare, {info['cpu']}, {info['cores']} cores, "
          f"{len(slots)} candidates at a time on {a.cores_per} cores each, {a.seconds:g} s each, "
          f"precision {a.precision}, seed {a.seed}; load average "
          f"{info['load_before'][0]:.2f} before, {info['load_after'][0]:.2f} after; the current recipe, "
          f"candidate {current()}: {RECIPE}")
    cols = ['candidate', 'change', 'steps', 'best_val', 'best_step', 'wall_s']
    print(table(sorted(rows, key=lambda r: r.get('best_val', float('inf'))), cols))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', help='folder for results.json and results.csv')
    ap.add_argument('--seconds', type=float, default=180, help='wall time a candidate trains (time_limit)')
    ap.add_argument('--parallel', type=int, default=0, help='candidates at once (0: cores // cores-per)')
    ap.add_argument('--cores-per', type=int, default=2, help='CPU cores (and torch threads) per candidate')
    ap.add_argument('--candidates', type=int, default=len(CHANGES), help='run the first N candidates only')
    ap.add_argument('--only', help='run these candidates only, by number: e.g. 0,2,4')
    ap.add_argument('--eval-every', type=int, default=RECIPE['train'].get('eval_every', 250))
    ap.add_argument('--val-chars', type=int, default=250_000, help='characters each validation scores')
    ap.add_argument('--precision', default='auto', help="'auto' (bf16 if the CPU has it), 'fp32'")
    ap.add_argument('--seed', type=int, default=0, help='the seed every candidate trains from')
    ap.add_argument('--worker', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker: worker(json.loads(args.worker))
    elif not args.out: ap.error('--out is required: the folder for results.json and results.csv')
    else: main(args)
