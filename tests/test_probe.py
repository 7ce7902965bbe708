"""The defects a hostile probe found in the run, the lock and the command line (issue 19, items 2-4, 6-8).

- a run folder is never overwritten: without `--resume`, an `--out` holding any run file (`best.safetensors`
  alone counts), or the `--init-from` folder itself, is refused with one line; the folder keeps its bytes;
- the lock file never follows a symbolic link; a lock that is a folder or cannot be written is one line naming
  the fix;
- the random offset of each epoch's streams stays inside what the start-up checks allow, for every seed
  (checked on texts just above the minimum size), and a run that died of it at an epoch boundary resumes;
- a seed outside 0..2**63-1 is one line (train and generate); the CPU out of memory reads as the GPU does;
- SIGTERM or SIGINT while the text is prepared: a true one-line message, no lock or temporary file, nothing
  touched;
- messages that name the fix: an unwritable or empty `--out`, no empty folders left by a failed start,
  `--warmup`, a text too short to split, and a warning for a far-off `--lr`.

In-process (`charrnn.cli.main`) where it can be, a subprocess only for the signals. Tiny models, a few steps.
"""
from __future__ import annotations

import os, signal, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import charrnn.cli
from charrnn.core import ConfigError
from charrnn.batching import check_fits, split_data
from charrnn.training import Learner, TrainConfig
from charrnn.run import fit_batch_to_text

from conftest import TINY, TINY_SHAKESPEARE_BYTES, assert_user_error, snapshot

SHAKESPEARE = TINY_SHAKESPEARE_BYTES.decode('utf-8')


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    "Every test's corpora cache is its own."
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))


@pytest.fixture
def text(tmp_path) -> Path:
    p = tmp_path/'text.txt'
    p.write_text(SHAKESPEARE[:5000], encoding='utf-8')
    return p


@pytest.fixture
def tiny_run(text, tmp_path, cli) -> Path:
    "A tiny trained run folder (2 steps)."
    out = tmp_path/'done'
    r = cli('train', text, '--out', out, *TINY, '--max-steps', 2)
    assert r.returncode == 0, r
    return out


# ------------------------------------------------------------------ 2. a run folder is never overwritten

@pytest.mark.parametrize('name', ['best.safetensors', 'history.json', 'loss.png'])
def test_a_folder_holding_any_run_file_is_refused(text, tmp_path, cli, tiny_run, name):
    out = tmp_path/'run'
    out.mkdir()
    (out/name).write_bytes((tiny_run/name).read_bytes())
    before = snapshot(out)
    r = cli('train', text, '--out', out, *TINY, '--max-steps', 1)
    assert_user_error(r, 'train', str(out), name, '--out')
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == [name]


def test_out_is_the_init_from_folder(text, tmp_path, cli, tiny_run):
    (tiny_run/'latest.safetensors').unlink()  # its best model alone: still a run folder, and the source
    before = snapshot(tiny_run)
    r = cli('train', text, '--out', tiny_run, '--init-from', tiny_run, '--max-steps', 1)
    assert_user_error(r, 'train', '--init-from', '--out')
    assert snapshot(tiny_run) == before
    r = cli('train', text, '--out', tiny_run, '--init-from', tiny_run/'best.safetensors', '--max-steps', 1)
    assert_user_error(r, 'train', '--init-from')
    assert snapshot(tiny_run) == before


# ------------------------------------------------------------------ 3. the lock file

@pytest.mark.parametrize('dangling', [False, True])
def test_the_lock_never_follows_a_symlink(text, tmp_path, cli, dangling):
    out, target = tmp_path/'run', tmp_path/'precious.txt'
    out.mkdir()
    if not dangling: target.write_text('precious\n')
    (out/'train.lock').symlink_to(target)
    r = cli('train', text, '--out', out, *TINY, '--max-steps', 1)
    assert_user_error(r, 'train', 'train.lock', 'symbolic link')
    assert (target.read_text() == 'precious\n') if not dangling else not target.exists()
    assert (out/'train.lock').is_symlink() and [p.name for p in out.iterdir()] == ['train.lock']


def test_a_lock_that_is_a_folder(text, tmp_path, cli):
    out = tmp_path/'run'
    (out/'train.lock').mkdir(parents=True)
    r = cli('train', text, '--out', out, *TINY, '--max-steps', 1)
    assert_user_error(r, 'train', 'train.lock', 'folder', 'remove')
    assert (out/'train.lock').is_dir()


def deny(monkeypatch, path:Path):
    "`os.open(path)` fails as it does where the user may not write."
    real = os.open
    def fake(p, *a, **kw):
        if Path(p) == path: raise PermissionError(13, 'Permission denied', str(p))
        return real(p, *a, **kw)
    monkeypatch.setattr(os, 'open', fake)


def test_an_unwritable_lock_file(text, tmp_path, cli, monkeypatch):
    out = tmp_path/'run'
    out.mkdir()
    (out/'train.lock').write_text('')
    deny(monkeypatch, out/'train.lock')
    r = cli('train', text, '--out', out, *TINY, '--max-steps', 1)
    assert_user_error(r, 'train', 'train.lock', 'remove')


def test_an_unwritable_out(text, tmp_path, cli, monkeypatch):
    out = tmp_path/'run'
    out.mkdir()
    deny(monkeypatch, out/'train.lock')
    r = cli('train', text, '--out', out, *TINY, '--max-steps', 1)
    assert_user_error(r, 'train', str(out), 'not writable', '--out')


def test_a_run_folder_that_cannot_be_made(text, tmp_path, cli, monkeypatch):
    out, real = tmp_path/'a'/'b'/'run', Path.mkdir
    def mkdir(self, *a, **kw):  # as where the user may not write: the parents are made, the run folder is not
        if self != out: return real(self, *a, **kw)
        real(self.parent, parents=True, exist_ok=True)
        raise PermissionError(13, 'Permission denied', str(self))
    monkeypatch.setattr(Path, 'mkdir', mkdir)
    r = cli('train', text, '--out', out, *TINY, '--max-steps', 1)
    assert_user_error(r, 'train', str(out), 'permission denied', '--out')
    assert not (tmp_path/'a').exists()


# ------------------------------------------------------------------ 4. each epoch's offset

def old_offset(seed:int, epoch:int, seq_len:int) -> int:
    "The offset the run drew before the fix (where it fitted, the run must still use it)."
    g = torch.Generator().manual_seed((seed * 100_003 + epoch) % 2**64)
    return int(torch.randint(seq_len, (1,), generator=g))


def epoch_offsets(ids:torch.Tensor, cfg:TrainConfig, epochs=(1, 2, 3)) -> list:
    "Each epoch's offset, from `Learner.batcher` (the ids are `arange`: the first input is the offset)."
    learn = SimpleNamespace(cfg=cfg, shard=(0, 1), train_ids=ids)
    res = []
    for learn.epoch in epochs:
        b = Learner.batcher(learn)
        assert len(b) >= 1
        res.append(int(b.x[0, 0]))
    return res


@pytest.mark.parametrize('bs,sl', [(4, 16), (3, 7), (2, 50)])
def test_every_seed_fits_just_above_the_minimum(bs, sl):
    seeds = [*range(200), 2**63 - 1]
    for n in range(bs * sl + 1, bs * sl + sl + 2):
        ids = torch.arange(n)
        for seed in seeds:
            got = epoch_offsets(ids, TrainConfig(batch_size=bs, seq_len=sl, seed=seed))
            for e, o in zip((1, 2, 3), got):
                old = old_offset(seed, e, sl)
                assert o == (old if bs * sl + 1 + old <= n else n - 1 - bs * sl), (n, seed, e, o, old)


def test_every_seed_fits_after_batch_fitting():
    for n in (101, 150, 299, 1000, 3250, 3299):
        for seed in range(200):
            cfg = TrainConfig(batch_size=32, seq_len=100, seed=seed)
            fit_batch_to_text(cfg, n)
            check_fits(n, cfg.batch_size, cfg.seq_len)
            epoch_offsets(torch.arange(n), cfg)


def dying_seed(n_train:int, bs:int=4, sl:int=16) -> int:
    "A seed whose epoch-1 offset did not fit `n_train` characters before the fix."
    return next(s for s in range(1000) if bs * sl + 1 + old_offset(s, 1, sl) > n_train)


def test_a_short_run_crosses_epochs_and_a_dead_run_resumes(tmp_path, cli):
    p = tmp_path/'short.txt'
    p.write_text(SHAKESPEARE[:80], encoding='utf-8')  # 72 characters for training: 4 × 16 + 1 needs 65
    seed = dying_seed(72)
    args = [*TINY, '--seed', seed, '--eval-every', 1]
    r = cli('train', p, '--out', tmp_path/'a', *args, '--max-steps', 4)
    assert r.returncode == 0, r
    assert 'step      4 | epoch  4.00' in r.stdout, r
    # the state a run that died crossing into epoch 1 left: its latest checkpoint at the end of epoch 0
    r = cli('train', p, '--out', tmp_path/'b', *args, '--max-steps', 1)
    assert r.returncode == 0, r
    r = cli('train', p, '--out', tmp_path/'b', '--resume', '--max-steps', 4)
    assert r.returncode == 0, r
    assert 'step      4 | epoch  4.00' in r.stdout, r


# ------------------------------------------------------------------ 6. seeds, out of memory

@pytest.mark.parametrize('seed', ['-1', str(2**63), str(2**64)])
def test_a_seed_out_of_range(text, tmp_path, cli, seed):
    r = cli('train', text, '--out', tmp_path/'run', *TINY, '--max-steps', 1, '--seed', seed)
    assert_user_error(r, 'train', '--seed', seed)
    assert not (tmp_path/'run').exists()
    r = cli('generate', 'bundled', '--length', 5, '--seed', seed, '--device', 'cpu')
    assert_user_error(r, 'generate', '--seed', seed)


def test_the_largest_seed_works(text, tmp_path, cli):
    r = cli('train', text, '--out', tmp_path/'run', *TINY, '--max-steps', 1, '--seed', 2**63 - 1)
    assert r.returncode == 0, r


def test_out_of_cpu_memory_reads_as_on_the_gpu(cli, monkeypatch):
    try: torch.empty(2**60, dtype=torch.uint8)  # what torch really raises (no machine has an exabyte)
    except RuntimeError as e: cpu = e
    msgs = []
    for err in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), cpu):
        def fail(*a, e=err, **kw): raise e
        monkeypatch.setattr(charrnn.cli, 'train', fail)
        r = cli('train', 'x.txt', '--out', 'x')
        msgs.append(assert_user_error(r, 'train', 'out of memory', '--batch-size'))
        monkeypatch.setattr(charrnn.cli, 'generate_text', fail)
        r = cli('generate', 'bundled', '--device', 'cpu')
        msgs.append(assert_user_error(r, 'generate', 'out of memory'))
    assert msgs[:2] == msgs[2:]
    def other(*a, **kw): raise RuntimeError('another failure')
    monkeypatch.setattr(charrnn.cli, 'train', other)  # any other RuntimeError is not taken for one
    with pytest.raises(RuntimeError, match='another failure'):
        charrnn.cli.main(['train', 'x.txt', '--out', 'x'])


# ------------------------------------------------------------------ 7. a signal while the text is prepared

@pytest.fixture(scope='module')
def big_text(tmp_path_factory):
    "About 80 MB of tiny Shakespeare, repeated: seconds to hash and encode."
    p = tmp_path_factory.mktemp('big')/'big.txt'
    data = TINY_SHAKESPEARE_BYTES
    with open(p, 'wb') as f:
        for _ in range(80_000_000 // len(data)): f.write(data)
    yield p
    p.unlink()  # pytest keeps the last sessions' temporary folders: not this


@pytest.mark.parametrize('sig,existing', [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_a_signal_while_the_text_is_prepared(big_text, text, tmp_path, cli, sig, existing):
    if existing:
        out = tmp_path/'run'
        r = cli('train', text, '--out', out, *TINY, '--max-steps', 1)
        assert r.returncode == 0, r
        args, before = ['--resume'], snapshot(out)
    else: out, args = tmp_path/'new'/'parent'/'run', [*TINY, '--max-steps', 1]
    cache = tmp_path/'sigcache'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CHARRNN_CACHE': str(cache), 'MPLBACKEND': 'Agg'}
    cmd = [sys.executable, '-m', 'charrnn', 'train', str(big_text), '--out', str(out), *map(str, args)]
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (out/'train.lock').exists() and p.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.005)
    assert p.poll() is None, p.communicate()
    p.send_signal(sig)  # the lock is taken: the text is being prepared (most of a second at least)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, (p.returncode, stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f'charrnn train: error: stopped by {sig.name} before training'), stderr
    assert 'checkpoint' not in lines[0].lower() or 'no checkpoint' in lines[0].lower(), lines[0]
    if existing: assert snapshot(out) == before and 'is as it was' in lines[0] and 'resume it' in lines[0]
    else: assert not (tmp_path/'new').exists()
    assert [q for q in tmp_path.rglob('*') if q.name.endswith('.tmp') or q.name == 'train.lock'] == []


# ------------------------------------------------------------------ 8. messages that name the fix

def test_an_empty_out(text, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(cli('train', text, '--out', '', *TINY, '--max-steps', 1), 'train', '--out')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['text.txt']


def test_a_failed_start_leaves_no_folders(text, tmp_path, cli):
    out = tmp_path/'a'/'b'/'run'
    r = cli('train', text, '--out', out, '--batch-size', 1000, '--seq-len', 100, '--max-steps', 1)
    assert_user_error(r, 'train', 'batch size')
    assert not (tmp_path/'a').exists()


def test_the_warmup_message_says_what_is_allowed(text, tmp_path, cli):
    r = cli('train', text, '--out', tmp_path/'run', '--warmup', '-1')
    line = assert_user_error(r, 'train', '--warmup', '-1', '0 or more')
    assert 'positive' not in line, line


def test_a_text_too_short_to_split_says_how_long_it_must_be(tmp_path, cli):
    for n, f in [(2, 0.1), (5, 0.1), (3, 0.5), (100, 0.99)]:
        with pytest.raises(ConfigError) as e: split_data(torch.arange(n), f)
        need = int(str(e.value).split('at least ')[1].split()[0].replace(',', ''))
        split_data(torch.arange(need), f)
        with pytest.raises(ConfigError): split_data(torch.arange(need - 1), f)
    p = tmp_path/'short.txt'
    p.write_text('hello', encoding='utf-8')
    assert_user_error(cli('train', p, '--out', tmp_path/'run'), 'train', '5 characters', 'at least 15')


@pytest.mark.parametrize('lr', ['1e-7', '5'])
def test_a_far_off_learning_rate_warns_once(text, tmp_path, cli, lr):
    r = cli('train', text, '--out', tmp_path/'run', *TINY, '--max-steps', 1, '--lr', lr)
    assert r.returncode == 0, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('warning: --lr') and f'{float(lr):g}' in lines[0], r
