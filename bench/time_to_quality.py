"""Time to quality: validation loss against wall-clock seconds for `charrnn train` with the default recipe.

Runs `charrnn train tinyshakespeare --out TMP` (90/10 split, no size flags: the device's recipe) as a
subprocess and times the whole process, start-up included. Prints a JSON line per validation, the totals, and
a table.

    python bench/time_to_quality.py [--device cpu|cuda] [--budget SECONDS] [--seed 0]
                                    [-- extra charrnn train flags]
"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path
from _common import machine, emit, table
from charrnn.checkpoint import RunDir

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--device', default='auto')
ap.add_argument('--budget', type=float, default=None,
                help='seconds for the whole process (default: the recipe: 180 on CPU, 60 on GPU)')
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('extra', nargs='*', help='more flags for charrnn train')
a = ap.parse_args()
info = machine()
emit(dict(figure='machine', **info))
out = Path(tempfile.mkdtemp())/'run'
cmd = [sys.executable, '-m', 'charrnn', 'train', 'tinyshakespeare', '--out', str(out), '--device', a.device,
       '--seed', str(a.seed), '--quiet', *a.extra]
if a.budget:  # leave the process's start-up (imports, reading the text) inside the budget
    cmd += ['--time-limit', str(a.budget - 6)]
t = time.perf_counter()
proc = subprocess.run(cmd, capture_output=True, text=True)   # tiny Shakespeare ships inside the package
wall = time.perf_counter() - t
if proc.returncode: raise SystemExit(f'charrnn train failed ({proc.returncode}): {proc.stderr}')
hist = json.loads(RunDir(out).history.read_text())
rows = []
for e in hist['evals']:
    r = dict(figure='val_loss', step=e['step'], train_seconds=e['elapsed'], val_loss=round(e['val_loss'], 4),
             bits_per_char=round(e['val_loss'] / 0.6931471805599453, 3))
    emit(r)
    rows.append(r)
s = hist['summary']
best = min(e['val_loss'] for e in hist['evals'])
emit(dict(figure='time_to_quality', best_val_loss=round(best, 4), process_seconds=round(wall, 1),
          train_seconds=s['train_seconds'], steps=s['step'], device=s['device'], params=s['params'],
          recipe=s['train_config'], command=' '.join(cmd[2:])))
print()
print(f"charrnn train tinyshakespeare (default recipe on {s['device']}: {s['params']:,} params), "
      f"{info['cpu']}, {info['cores']} cores" + (f", {info['gpu']}" if 'gpu' in info else ''))
print(table(rows, ['step', 'train_seconds', 'val_loss', 'bits_per_char']))
print(f"\nbest validation loss {best:.4f} nats ({best / 0.6931471805599453:.3f} bits/char); "
      f"whole process {wall:.1f} s")
