"""How the cost of a run grows with the size of its text (issue 14): 1, 10, 100 and 1,000 MB.

For each size, a text made by repeating tiny Shakespeare (the copy inside the package) is written to a
temporary folder (deleted after, with its ids cache), and three fresh processes each measure one thing, so
that each peak memory figure is its own:

  cold    `prepare_text` with an empty cache: read, check, build the vocabulary and encode in one streaming
          pass, write the cache. Peak memory of the process (ru_maxrss) and the time.
  plain   (only up to --plain-max MB) the lesson's way, for comparison: `read_text`, `Vocab.from_text`,
          `Vocab.encode`.
  cached  `prepare_text` again (the ids memory-mapped from the cache), split into what it costs: hashing the
          text (`file_sha256`) and checking the cache file (`_load_ids`: header, size, CRC-32 of the mapped
          ids). Then the CPU recipe's model and batch (when the figures were taken, a 2×384 LSTM on
          batches of 32 × 100; since stop 29, 2×448 with LayerNorms on 32 × 64) trains 100 steps (--steps)
          with one validation at the end, scoring `TrainConfig.val_chars` characters (its default, or the
          whole split if smaller): step time = (time of `fit` − the validation) / steps. Peak memory of the
          whole process.

Peak memory (ru_maxrss, `peak … GB`) includes Python, torch and charrnn themselves (about 0.24 GB, printed as
`base`: the peak after the imports). `+GB` is what preparing added to the peak above the memory in use just
before it (Linux: the peak is reset through /proc/self/clear_refs first). The 1 GB row needs ~3 GB of memory
and ~4 GB of disk.

    python bench/scale.py                      # 1, 10, 100, 1000 MB
    python bench/scale.py --sizes 1 10         # just those
    python bench/scale.py --prep-only          # preparation only: minutes, not an hour, on 2 cores
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import CORPUS, emit, machine, table

SOURCE = CORPUS  # tiny Shakespeare from the package (ASCII, 1,115,394 bytes)

CHILD = r'''
import json, os, re, resource, sys, time, zlib
import numpy as np, torch
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def status(key):
    m = re.search(key + r':\s+(\d+) kB', open('/proc/self/status').read())
    return int(m.group(1)) * 1024
from charrnn.data import file_sha256
from charrnn.textcache import _load_ids, ids_file
from charrnn.encoding import Vocab, read_text
from charrnn.run import prepare_text, recipe, run_settings
from charrnn.model import CharModel
from charrnn.runlearner import RunLearner
from charrnn.resilience import TimeLimitCB
from charrnn.training import Callback
class ValClock(Callback):
    "How long the last validation took (`TimeLimitCB.cost` stays 0 for one that comes after the last step)."
    def before_validate(self, learn): self.t = time.perf_counter()
    def after_validate(self, learn): self.cost = time.perf_counter() - self.t
stage = sys.argv[1]
path = sys.argv[2]
prep_only = sys.argv[3] == '1'
out = {}
out['base'] = peak()
if os.access('/proc/self/clear_refs', os.W_OK):
    open('/proc/self/clear_refs', 'w').write('5')  # peak (VmHWM) := memory in use now
rss = status('VmRSS')
t = time.perf_counter()
if stage == 'plain':
    s = read_text(path)
    v = Vocab.from_text(s)
    ids = v.encode(s)
    out['chars'] = len(ids)
else:
    prepared = prepare_text(path)  # the vocabulary, training ids, validation ids, facts
    vocab = prepared[0]
    train_ids, val_ids = prepared[1:3]
    out['chars'] = prepared[3]['chars']
out['prep'] = time.perf_counter() - t
out['prep_mem'] = status('VmHWM') - rss  # what preparing added to the peak, above the memory in use before it
if stage == 'cached' and not prep_only:
    steps = int(sys.argv[4])
    mcfg, cfg = run_settings(dict(max_steps=steps, eval_every=steps), recipe(torch.device('cpu')))
    clock = ValClock()  # TimeLimitCB keeps the recipe's time limit
    cbs = [TimeLimitCB(), clock]
    learn = RunLearner(CharModel(vocab, mcfg), train_ids, val_ids, cfg, cbs=cbs, quiet=True)
    t = time.perf_counter()
    learn.fit()
    fit = time.perf_counter() - t
    e = learn.history.evals[-1]
    out.update(val=clock.cost, val_chars=e.get('val_chars'), step=(fit - clock.cost) / steps,
               steps=learn.step, threads=torch.get_num_threads())
out['peak'] = peak()  # before the timings below map the cache file a second time
if stage == 'cached':  # the cached preparation's parts: hashing the text, checking the cache file
    t = time.perf_counter()
    sha = file_sha256(path)
    out['hash'] = time.perf_counter() - t
    t = time.perf_counter()
    assert _load_ids(ids_file(sha), sha) is not None  # header, size, CRC-32
    out['check'] = time.perf_counter() - t
print(json.dumps(out))
'''


def make_text(dest:Path, mb:int) -> Path:
    "A text of `mb` million bytes: tiny Shakespeare repeated (ASCII, so bytes are characters)."
    body, n = SOURCE.read_bytes(), mb * 1_000_000
    with open(dest, 'wb') as f:
        for i in range(0, n, len(body)): f.write(body[:n - i])
    return dest


def child(stage:str, path:Path, cache:Path, prep_only:bool=False, steps:int=100) -> dict:
    "Run one stage in a fresh process; its figures."
    env = {**os.environ, 'CHARRNN_CACHE': str(cache)}
    cmd = [sys.executable, '-c', CHILD, stage, str(path), str(int(prep_only)), str(steps)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode: raise SystemExit(f'{stage} on {path} failed:\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[1, 10, 100, 1000], help='text sizes in MB')
    ap.add_argument('--plain-max', type=int, default=100,
                    help='measure the plain (whole-text) preparation up to this size in MB')
    ap.add_argument('--steps', type=int, default=100,
                    help='training steps to time (one validation at the end)')
    ap.add_argument('--prep-only', action='store_true',
                    help='measure the preparation only (no training, no validation)')
    ap.add_argument('--tmp', default=None,
                    help='folder for the temporary texts (default: the system temporary folder)')
    a = ap.parse_args()
    emit(dict(machine=machine(), OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS')))
    rows, GB = [], 1e9
    for mb in a.sizes:
        tmp = Path(tempfile.mkdtemp(prefix='charrnn-scale-', dir=a.tmp))
        try:
            text, cache = make_text(tmp/f'text{mb}.txt', mb), tmp/'cache'
            cold = child('cold', text, cache)
            plain = child('plain', text, cache) if mb <= a.plain_max else {}
            warm = child('cached', text, cache, a.prep_only, a.steps)
        finally: shutil.rmtree(tmp, ignore_errors=True)
        row = {'MB': mb, 'chars': cold['chars'],
               'prep cold s': round(cold['prep'], 2), 'peak cold GB': round(cold['peak'] / GB, 3),
               'cold +GB': round(cold['prep_mem'] / GB, 3),
               'prep cached s': round(warm['prep'], 3), 'cached +GB': round(warm['prep_mem'] / GB, 3),
               'hash s': round(warm['hash'], 3), 'check s': round(warm['check'], 3),
               'plain prep s': round(plain['prep'], 2) if plain else '–',
               'peak plain GB': round(plain['peak'] / GB, 3) if plain else '–',
               'plain +GB': round(plain['prep_mem'] / GB, 3) if plain else '–'}
        if not a.prep_only:
            row.update({'val s': round(warm['val'], 2), 'val chars': warm['val_chars'],
                        'step ms': round(warm['step'] * 1e3, 1),
                        'peak train GB': round(warm['peak'] / GB, 3)})
        row['base GB'] = round(cold['base'] / GB, 3)
        emit(dict(row, cold=cold, plain=plain, cached=warm))
        rows.append(row)
    print(table(rows, list(rows[0])))


if __name__ == '__main__': main()
