"""Kill `charrnn train` with SIGKILL at random moments, again and again, resuming each time; check every
checkpoint.

Issue 5's kill test. SIGKILL cannot be caught, so this is what a machine that is taken away (a pre-empted
cloud instance, the out-of-memory killer, `kill -9`) does to a run. The script:

1. trains the run once without interruption (the reference; it also measures start-up time and time per step);
2. starts the same run in another folder and SIGKILLs it after a random, seeded delay, at least `--kills`
   times in a row, starting it again after each kill with `--resume` (without it while there is no
   `latest.safetensors` yet). Most kills fall at a random moment of training (a step, a validation, a
   checkpoint or history write); a fraction (`--startup-kills`) fall at a random moment of start-up, before
   anything is written;
3. after every kill checks the run folder: `latest.safetensors` loads (`charrnn.checkpoint.read_checkpoint`,
   the training state, the model), its step, summary and losses agree and are finite, its step never goes
   back; `best.safetensors` loads; `history.json` parses; `loss.png` is a whole PNG. Temporary files that the
   kill left (a write cut short) are counted; the next run must remove them;
4. lets the last start run to the end and checks: exit status 0, final step == `--steps`, no temporary files,
   and the final weights, optimizer state and every other tensor of `latest.safetensors` (and
   `best.safetensors`) equal the uninterrupted reference's, bit for bit (CPU, fp32, fixed seed: resuming is
   exact, so the kills change nothing).

It prints one JSON line and a markdown table, and exits with status 0 when every check held, 1 otherwise.

Run it from the repository root with the virtual environment active (about a minute on one CPU thread):

    OMP_NUM_THREADS=1 python bench/kill_test.py                        # 20 kills, 120 steps, seed 0
    OMP_NUM_THREADS=1 python bench/kill_test.py --kills 50 --steps 300 --seed 7 --keep

The text is the first 100,000 characters of tiny Shakespeare (the copy inside the package; `--text FILE`
chooses another). The model is tiny (2×32 LSTM, batches of 4 × 16) so that a run is mostly start-up,
checkpoints and validation, the moments a kill is most likely to damage something.
"""
from __future__ import annotations

import argparse, json, os, random, shutil, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from _common import emit, table, machine, summary

from charrnn.checkpoint import read_checkpoint, model_from_checkpoint, load, unflatten_state, RunDir
from charrnn.data import resolve_text_path

REPO = Path(__file__).resolve().parents[1]

ap = argparse.ArgumentParser(description=summary(__doc__),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument('--kills', type=int, default=20,
                help='SIGKILLs that must land while the run is going (default 20)')
ap.add_argument('--steps', type=int, default=120,
                help="the run's planned --max-steps (default 120)")
ap.add_argument('--seed', type=int, default=0,
                help='seeds the kill moments (the run itself always uses --seed 0)')
ap.add_argument('--checkpoint-every', type=int, default=3)
ap.add_argument('--eval-every', type=int, default=10)
ap.add_argument('--window-steps', type=float, default=None,
                help='a training kill falls within this many steps after the run is ready (default: about '
                     '1.5 × steps / kills, at least 2 checkpoint intervals, so that all kills land before '
                     'the end)')
ap.add_argument('--startup-kills', type=float, default=0.2,
                help='fraction of kills that fall during start-up')
ap.add_argument('--text', default=None,
                help='the text to train on (default: 100 KB of tiny Shakespeare)')
ap.add_argument('--device', default='cpu')
ap.add_argument('--out', default=None,
                help='folder for the runs (default: a temporary folder, removed at the end)')
ap.add_argument('--keep', action='store_true', help='keep the run folders')
a = ap.parse_args()

work = Path(a.out or tempfile.mkdtemp(prefix='charrnn-kill-'))
work.mkdir(parents=True, exist_ok=True)
env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'MPLBACKEND': 'Agg'}


def text_file() -> Path:
    if a.text: return Path(a.text)
    p = work/'text.txt'   # tiny Shakespeare ships inside the package: no download, no data folder
    p.write_text(resolve_text_path('tinyshakespeare').read_text(encoding='utf-8')[:100_000], encoding='utf-8')
    return p


TEXT = text_file()
SETTINGS = ['--hidden', '32', '--layers', '2', '--dropout', '0.3', '--batch-size', '4', '--seq-len', '16',
            '--precision', 'fp32', '--device', a.device, '--seed', '0', '--max-steps', str(a.steps),
            '--checkpoint-every', str(a.checkpoint_every), '--eval-every', str(a.eval_every)]


def temp_files(out:Path) -> list:
    if not out.exists(): return []
    return sorted(p.name for p in out.iterdir() if p.name.startswith('.') or p.name.endswith('.tmp'))


class Attempt:
    "One start of `charrnn train`, whose stdout goes to a file we can watch."
    def __init__(self, out:Path, resume:bool, n:int):
        self.log, self.err = work/f'attempt{n}.out', work/f'attempt{n}.err'
        self.t0 = time.monotonic()
        with open(self.log, 'w') as o, open(self.err, 'w') as e:
            self.p = subprocess.Popen([sys.executable, '-m', 'charrnn', 'train', str(TEXT), '--out', str(out),
                                       *SETTINGS, *(['--resume'] if resume else [])],
                                      stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env, cwd=REPO)

    def ready(self) -> bool:
        "Whether the run has printed its start line (printed just before training starts)."
        try: return 'run folder' in self.log.read_text()
        except OSError: return False

    def wait_until(self, cond, deadline:float|None=None) -> bool:
        "Poll until `cond()` (True), the process ends or `deadline` passes (False)."
        while not cond():
            if self.p.poll() is not None: return False
            if deadline is not None and time.monotonic() >= deadline: return False
            time.sleep(0.002)
        return True


def check_folder(out:Path, last_step:int) -> dict:
    "Load every file of the run folder; what is wrong with them, and latest's step."
    r, run = dict(step=None, problems=[], loaded=0), RunDir(out)
    latest = run.latest
    if latest.exists():
        try:
            ckpt = read_checkpoint(latest)
            tensors, meta = ckpt.tensors, ckpt.meta
            state = unflatten_state(meta['train_state'], tensors)
            model_from_checkpoint(tensors, meta, latest)
            agree = state['step'] == meta['summary']['step'] == len(state['train_loss'])
            assert agree, 'step, summary and losses disagree'
            finite = all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
            assert finite, 'a tensor is not finite'
            assert state['step'] >= last_step, f"latest went back from step {last_step} to {state['step']}"
            r['step'] = state['step']
            r['loaded'] += 1
        except Exception as e: r['problems'].append(f'{latest.name}: {type(e).__name__}: {e}')
    if run.best.exists():
        try:
            load(run.best)
            r['loaded'] += 1
        except Exception as e: r['problems'].append(f'{run.best.name}: {type(e).__name__}: {e}')
    if run.history.exists():
        try: json.loads(run.history.read_text())
        except Exception as e: r['problems'].append(f'{run.history.name}: {type(e).__name__}: {e}')
    if run.plot.exists():
        png = run.plot.read_bytes()
        if not (png.startswith(b'\x89PNG\r\n\x1a\n') and png.endswith(b'IEND\xaeB`\x82')):
            r['problems'].append(f'{run.plot.name} is not a whole PNG')
    return r


def same_tensors(p:Path, q:Path) -> bool:
    ta = read_checkpoint(p).tensors
    tb = read_checkpoint(q).tensors
    same = lambda k: ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k])
    return sorted(ta) == sorted(tb) and all(same(k) for k in ta)


t_begin = time.monotonic()
rng = random.Random(a.seed)

# 1. the reference: uninterrupted; it also says how long start-up and a step take here
ref_out = work/'reference'
shutil.rmtree(ref_out, ignore_errors=True)
ref = Attempt(ref_out, False, 0)
ref.wait_until(ref.ready)
t_ready = time.monotonic()
ref.p.wait()
if ref.p.returncode != 0: sys.exit(f"the reference run failed:\n{ref.err.read_text()}")
startup_s = t_ready - ref.t0
s_per_step = (time.monotonic() - t_ready) / a.steps
window_steps = a.window_steps or max(2 * a.checkpoint_every, 1.5 * a.steps / max(1, a.kills))

# 2. kill, resume, kill, ...
out = work/'killed'
shutil.rmtree(out, ignore_errors=True)
stats = dict(kills_attempted=0, kills_landed=0, kills_in_startup=0, kills_in_training=0, ended_before_kill=0,
             resumes=0, fresh_starts=0, checkpoints_loaded_ok=0, checkpoints_corrupted=0,
             other_files_damaged=0, temp_files_left_by_kills=0, failed_starts=0)
problems = []
last_step = 0   # latest's step after the last kill: it must never go back
n = 0           # starts so far
# which kills fall in start-up: round(kills × fraction) of them, at random places in the sequence
n_startup = round(a.kills * a.startup_kills)
phases = ['startup'] * n_startup + ['training'] * (a.kills - n_startup)
rng.shuffle(phases)
while stats['kills_landed'] < a.kills and n < 3 * a.kills + 10:
    n += 1
    resume = RunDir(out).latest.exists()
    stats['resumes' if resume else 'fresh_starts'] += 1
    att = Attempt(out, resume, n)
    phase = phases[stats['kills_landed'] % len(phases)]
    if phase == 'startup':  # a random moment of start-up: imports, reading the text, loading the state
        deadline = att.t0 + rng.uniform(0, startup_s)
    else:  # a random moment of training: a step, a validation, a checkpoint or history write
        att.wait_until(att.ready)
        deadline = time.monotonic() + rng.uniform(0, window_steps * s_per_step)
    att.wait_until(lambda: False, deadline)
    stats['kills_attempted'] += 1
    if att.p.poll() is None:
        att.p.send_signal(signal.SIGKILL)
        att.p.wait()
        stats['kills_landed'] += 1
        stats[f'kills_in_{phase}'] += 1
    else:
        stats['ended_before_kill'] += 1
        if att.p.returncode != 0:
            stats['failed_starts'] += 1
            err = att.err.read_text().strip()[-500:]
            problems.append(f"start {n} exited with status {att.p.returncode}: {err}")
            break
    left = temp_files(out)
    stats['temp_files_left_by_kills'] += len(left)
    c = check_folder(out, last_step)
    stats['checkpoints_loaded_ok'] += c['loaded']
    corrupted = [q for q in c['problems'] if q.endswith('.safetensors') or '.safetensors:' in q]
    stats['checkpoints_corrupted'] += len(corrupted)
    stats['other_files_damaged'] += len(c['problems']) - len(corrupted)
    problems += [f'after kill {n} ({phase}): {q}' for q in c['problems']]
    if c['step'] is not None: last_step = c['step']
    if att.p.returncode == 0: break   # the run finished before the kill: nothing left to kill

# 3. let it finish
resume = RunDir(out).latest.exists()
stats['resumes' if resume else 'fresh_starts'] += 1
final = Attempt(out, resume, n + 1)
final.p.wait()
c = check_folder(out, last_step)
stats['checkpoints_loaded_ok'] += c['loaded']
problems += [f'after the last run: {q}' for q in c['problems']]
if final.p.returncode != 0:
    problems.append(f"the last run exited with status {final.p.returncode}: {final.err.read_text()[-500:]}")
ref_run, run = RunDir(ref_out), RunDir(out)
exact = (final.p.returncode == 0 and same_tensors(ref_run.latest, run.latest)
         and same_tensors(ref_run.best, run.best))
at_end = temp_files(out)
if at_end: problems.append(f'temporary files left at the end: {at_end}')
if stats['kills_landed'] < a.kills:
    problems.append(f"only {stats['kills_landed']} of {a.kills} kills landed before the run ended")
if not exact: problems.append('the final checkpoints differ from the uninterrupted run')

rec = dict(figure='kill_test', **stats, temp_files_at_end=len(at_end), final_step=c['step'],
           planned_steps=a.steps, final_equals_uninterrupted=exact, startup_s=round(startup_s, 2),
           ms_per_step=round(1000 * s_per_step, 1), kill_window_steps=round(window_steps, 1), seed=a.seed,
           wall_s=round(time.monotonic() - t_begin, 1),
           ok=not problems and c['step'] == a.steps and stats['checkpoints_corrupted'] == 0,
           problems=problems, machine=machine())
emit(rec)
rows = [dict(check=k.replace('_', ' '), value=rec[k]) for k in
        ('kills_attempted', 'kills_landed', 'kills_in_startup', 'kills_in_training', 'ended_before_kill',
         'resumes', 'fresh_starts', 'checkpoints_loaded_ok', 'checkpoints_corrupted', 'other_files_damaged',
         'temp_files_left_by_kills', 'temp_files_at_end', 'final_step', 'planned_steps',
         'final_equals_uninterrupted', 'wall_s', 'ok')]
print(table(rows, ['check', 'value']))
for q in problems: print('problem:', q)
if not a.keep and a.out is None: shutil.rmtree(work, ignore_errors=True)
sys.exit(0 if rec['ok'] else 1)
