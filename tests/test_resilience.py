"""Nothing lost (issue 5): crash-safe checkpoints, exact resume, safe loading and the divergence guard.

The harness is conftest's: where a real process matters (signals, SIGKILL, the lock a run holds, and the
uninterrupted runs those are compared with bit for bit) a run is a real process (`run_cli`, or `start_train`
for one to signal); user errors, and faults that have to be injected (a NaN, an out-of-memory error, a full
disk, an interrupt in the middle of a write), go through `charrnn.cli.main` in this process (`cli`) or the
Python API. Checked here:

- exact resume: a run stopped part-way (SIGTERM, SIGINT, or `Learner.stop`) and resumed ends with the same
  weights, optimizer state, hidden state and RNG states as a run that never stopped, bit for bit, and the same
  loss at every step; also when the stop falls on an epoch boundary;
- SIGTERM and SIGINT: the step finishes, `latest.safetensors` is written at the step the message names, exit
  status 128 + signal, a message that says how to resume (and that command works); a second signal while the
  last checkpoint is written does not damage anything;
- safe loading: pickles crafted to create a file, saved as `evil.safetensors`, `evil.pt` (both torch.save
  formats) and as a run folder's `latest.safetensors`, are refused by `load`, `charrnn generate` and
  `charrnn train --resume` with a clear error, and the file never appears;
- damaged checkpoints: truncated at many lengths, zero bytes, zeroed, a flipped byte in the tensor data, in
  the header JSON (also every byte of a header, one at a time) -> `CheckpointError` / exit status 2, never a
  silently different model or training state;
- the divergence guard: a NaN loss (injected with a hook) rolls back once, at half the learning rate, says so,
  then stops with `TrainingDiverged`; non-finite weights are never written; a non-finite validation loss stops
  the run; an absurd `--lr` on the command line stops with exit status 1 and one line;
- out of memory: one line suggesting a smaller `--batch-size` or `--seq-len`, exit status 2, checkpoints
  intact;
- resuming with a text whose characters differ: an error naming them;
- failed or interrupted runs (an error or Ctrl-C in the middle of a write, a full disk, SIGKILL) never leave a
  broken `latest.safetensors` nor temporary files in `--out` (those a SIGKILL leaves are removed by the next
  run).
- one run per folder (issue 14): a second `charrnn train` into a folder being trained, new or `--resume`,
  exits 2 at once naming the folder and the holder's process id, and changes nothing; `charrnn generate` and
  `load` read the folder meanwhile; the first run ends bit-identical to an undisturbed one; a SIGKILL leaves
  no lock anyone holds;
- resume from the folder alone: the stop message's command (`charrnn train --out DIR --resume`), run verbatim
  in a shell, ends bit-identical to an uninterrupted run with its own seed and settings; a TEXT given must be
  the run's (another content with the same characters: a note); explicit flags are checked; a missing text
  gets one line;
- bounded validation: every validation scores the first `--val-chars` characters, and history.json and the log
  say how many.

Models are tiny (a 2×32 LSTM with dropout 0.3, batches of 4 × 16, fp32 on the CPU) and the text is a small
synthetic corpus written for the session: no data files, no network. The whole file takes about 50 s of CPU on
one CPU thread. Many SIGKILLs in a row: `bench/kill_test.py`.
"""
from __future__ import annotations

import errno, json, math, os, pickle, random, re, shlex, shutil, signal, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest
import torch

import charrnn.cli
from conftest import TINY, assert_user_error
from charrnn.model import CharModel
from charrnn.checkpoint import CheckpointError, load, read_checkpoint, unflatten_state
from charrnn.checkpointing import CheckpointCB
from charrnn.training import Learner, TrainConfig, seed_everything
from charrnn.runlearner import RunLearner
from charrnn.resilience import DivergenceCB, SignalCB, TrainingDiverged, read_latest, resume
from charrnn.run import prepare_text

PY = [sys.executable, '-m', 'charrnn']
# on top of conftest's TINY: two layers with dropout (so an exact resume must bring back the dropout RNG),
# fp32 on the CPU (bit-for-bit comparisons)
DEEP = ['--layers', '2', '--dropout', '0.3', '--precision', 'fp32', '--device', 'cpu']
STEPS = 60           # length of the command-line runs that get interrupted
TIMEOUT = 240        # seconds any one command may take (the test machines are slow and shared)
# the `straight` run's settings
RUN_ARGS = [*TINY, *DEEP, '--max-steps', STEPS, '--checkpoint-every', 2, '--eval-every', 20]
# the environment of a run started with `start_train` (the others are conftest's `run_cli` and `cli`)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg',
       'PYTHONDONTWRITEBYTECODE': '1', 'CHARRNN_TINYSHAKESPEARE_URL': 'http://127.0.0.1:9/never.txt'}

WORDS = 'the king and queen of my lord is that with you he his not it be for what shall thou thy good'.split()


def make_text(n_chars:int, seed:int=0, words=WORDS, marks='.,;:!?') -> str:
    "A deterministic pseudo-English text of about `n_chars` characters, in lines."
    rng = random.Random(seed)
    lines = []
    size = 0
    while size < n_chars:
        line = ' '.join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        line = line[0].upper() + line[1:] + rng.choice(marks) + '\n'
        lines.append(line)
        size += len(line)
    return ''.join(lines)


# ------------------------------------------------------------------ helpers

@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('resilience')


@pytest.fixture(scope='module')
def text_file(work) -> Path:
    "The corpus: 60,000 characters of synthetic text."
    p = work/'words.txt'
    p.write_text(make_text(60_000), encoding='utf-8')
    return p


def start_train(text, out, *args) -> subprocess.Popen:
    "Start `python -m charrnn train TEXT --out OUT ...` in the background (a process to signal or kill)."
    return subprocess.Popen([*PY, 'train', str(text), '--out', str(out), *map(str, args)], env=ENV,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors='replace')


def header_meta(path:Path) -> dict:
    "A charrnn checkpoint's header entries, read without the tensors (cheap enough to poll)."
    with open(path, 'rb') as f:
        n = int.from_bytes(f.read(8), 'little')
        raw = json.loads(f.read(n))['__metadata__']
    return {k: json.loads(v) for k, v in raw.items() if k in ('summary', 'vocab', 'config')}


def ckpt_step(path:Path) -> int:
    return header_meta(path)['summary']['step']


class TrainState(NamedTuple):
    "A `latest.safetensors` read back."
    tensors:dict  # every tensor: weights, optimizer state, hidden state, RNG states, losses
    meta:dict     # the header entries
    state:dict    # the unflattened training state


def train_state(path:Path) -> TrainState:
    "The tensors, header and unflattened training state of a `latest.safetensors`."
    ckpt = read_checkpoint(path)
    return TrainState(ckpt.tensors, ckpt.meta, unflatten_state(ckpt.meta['train_state'], ckpt.tensors))


def leftovers(folder:Path) -> list:
    "Temporary or hidden files in a run folder (there must be none)."
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith('.') or p.name.endswith('.tmp'))


def assert_healthy_run(folder:Path, step:int|None=None):
    """`folder` holds no temporary files and a `latest.safetensors` that loads, with finite tensors (at
    `step`)."""
    assert leftovers(folder) == [], leftovers(folder)
    latest = train_state(folder/'latest.safetensors')
    state = latest.state
    load(folder/'latest.safetensors')
    assert all(torch.isfinite(t).all() for t in latest.tensors.values() if t.is_floating_point())
    assert state['step'] == latest.meta['summary']['step'] == len(state['train_loss'])
    if step is not None: assert state['step'] == step
    if (folder/'best.safetensors').exists(): load(folder/'best.safetensors')
    if (folder/'history.json').exists(): json.loads((folder/'history.json').read_text())
    return state


def assert_same_tensors(a:dict, b:dict):
    assert sorted(a) == sorted(b)
    different = [k for k in a if not (a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))]
    assert different == [], f"tensors that differ: {different}"


def wait_until(cond, proc:subprocess.Popen, timeout:float=TIMEOUT) -> bool:
    "Poll `cond()` while `proc` runs; True once it holds, False if the process ended first."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond(): return True
        except (OSError, ValueError, KeyError): pass   # a file not there yet
        if proc.poll() is not None: return False
        time.sleep(0.002)
    return False


def past_step(path:Path, k:int):
    return lambda: path.exists() and ckpt_step(path) >= k


# ------------------------------------------------------------------ exact resume through the command line

@pytest.fixture(scope='module')
def straight(work, text_file, run_cli) -> Path:
    """A command-line run of STEPS steps that nothing interrupts (a process of its own, as the runs it is
    compared with)."""
    out = work/'straight'
    r = run_cli('train', text_file, '--out', out, *RUN_ARGS, timeout=TIMEOUT)
    assert r.returncode == 0, r
    return out


@pytest.fixture(scope='module', params=['SIGTERM', 'SIGINT'])
def interrupted(request, work, text_file, run_cli) -> SimpleNamespace:
    """The same run stopped by a signal once it has checkpointed a few steps, then resumed with the command it
    suggests."""
    name = request.param
    out = work/f'stopped-{name}'
    p = start_train(text_file, out, *RUN_ARGS)
    try:
        started = wait_until(past_step(out/'latest.safetensors', 4), p)
        assert started, "the run ended before it could be interrupted"
        p.send_signal(getattr(signal, name))
        stdout, stderr = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None: p.kill()
    stop = SimpleNamespace(returncode=p.returncode, stdout=stdout, stderr=stderr, leftovers=leftovers(out),
                           files=sorted(q.name for q in out.iterdir()))
    at_stop = work/f'at-{name}.safetensors'
    shutil.copy(out/'latest.safetensors', at_stop)
    m = re.search(r'(charrnn train \S.*?--resume)', stderr)
    resume = None
    # the command the message suggests, run as printed (plus the device: it is not part of a run's settings)
    if m:
        argv = shlex.split(m.group(1))[1:] + ['--device', 'cpu']
        resume = run_cli(*argv, timeout=TIMEOUT)
    return SimpleNamespace(name=name, out=out, stop=stop, at_stop=at_stop, resume=resume)


def test_signal_stops_cleanly(interrupted):
    s = interrupted.stop
    sig = getattr(signal, interrupted.name)
    assert s.returncode == 128 + sig, f"exit status {s.returncode}\n{s.stderr}"
    assert 'Traceback' not in s.stderr, s.stderr
    m = re.search(rf'stopped by {interrupted.name} at step (\d+)', s.stderr)
    assert m, s.stderr
    assert '--resume' in s.stderr and str(interrupted.out) in s.stderr, s.stderr
    step = int(m.group(1))
    assert 4 <= step < STEPS
    assert s.leftovers == [], s.leftovers
    assert {'latest.safetensors', 'history.json', 'loss.png'} <= set(s.files)
    model = load(interrupted.at_stop)               # loads as a model ...
    assert model.summary['step'] == step
    state = train_state(interrupted.at_stop).state   # ... and as a training state, at the step it names
    assert state['step'] == step and len(state['train_loss']) == step


def test_resume_after_signal_is_bit_exact(straight, interrupted):
    r = interrupted.resume
    no_command = f"no 'charrnn train ... --resume' command in the message:\n{interrupted.stop.stderr}"
    assert r is not None, no_command
    assert r.returncode == 0, r
    assert re.search(r'resuming at step \d+', r.stdout), r.stdout
    a = train_state(straight/'latest.safetensors')
    b = train_state(interrupted.out/'latest.safetensors')
    a_state = a.state
    b_state = b.state
    assert a_state['step'] == b_state['step'] == STEPS
    # every tensor: weights, Adam's moments and step counts, the carried hidden state, the RNG states, the
    # losses
    assert_same_tensors(a.tensors, b.tensors)
    assert a_state['train_loss'].tolist() == b_state['train_loss'].tolist()
    for k in ('epoch', 'window', 'lr_scale'): assert a_state[k] == b_state[k], k
    assert a_state['rng']['python'] == b_state['rng']['python']
    # the checkpoint written at the stop holds exactly the first steps' losses of the uninterrupted run
    s_state = train_state(interrupted.at_stop).state
    k = s_state['step']
    assert s_state['train_loss'].tolist() == a_state['train_loss'][:k].tolist()
    assert_healthy_run(interrupted.out, STEPS)


@pytest.mark.parametrize('name', ['SIGTERM', 'SIGINT'])
def test_second_signal_while_the_last_checkpoint_is_written(work, text_file, name):
    """A scheduler that sends SIGTERM again, or a second Ctrl-C, while the run writes its last checkpoint and
    plot."""
    out = work/f'twice-{name}'
    sig = getattr(signal, name)
    p = start_train(text_file, out, *RUN_ARGS)
    try:
        started = wait_until(past_step(out/'latest.safetensors', 2), p)
        assert started, "the run ended before it could be interrupted"
        p.send_signal(sig)
        # after the first signal the next line is the final validation; the last checkpoint and the plot
        # follow it
        line = p.stdout.readline()
        while line and not line.startswith('step'): line = p.stdout.readline()
        if p.poll() is None: p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None: p.kill()
    assert 'Traceback' not in stderr, stderr
    if name == 'SIGTERM':   # a repeated SIGTERM changes nothing: the run ends as after one
        assert p.returncode == 143, f"exit status {p.returncode}\n{stderr}"
        step = int(re.search(r'stopped by SIGTERM at step (\d+)', stderr).group(1))
        assert_healthy_run(out, step)
    else:                   # a second Ctrl-C stops at once; the last checkpoint written still stands
        assert p.returncode == 130, f"exit status {p.returncode}\n{stderr}"
        assert_healthy_run(out)


# ------------------------------------------------------------------ exact resume through the Python API

@pytest.fixture(scope='module')
def short_corpus(text_file):
    "The corpus cut so that an epoch is about 30 steps (an epoch boundary falls inside a short run)."
    text = prepare_text(text_file)
    return SimpleNamespace(vocab=text[0], train_ids=text[1][:2_000], val_ids=text[2][:3_000])


def api_trainer(short_corpus, out, max_steps:int, quiet=True, **cfg) -> RunLearner:
    """A learner with the callbacks of a real run (as `charrnn.run.train` adds them) that keeps its run in
    `out`."""
    seed_everything(0)
    model = CharModel(short_corpus.vocab, hidden=32, layers=2, dropout=0.3)
    cfg = TrainConfig(batch_size=4, seq_len=16, max_steps=max_steps, eval_every=10, checkpoint_every=2,
                      precision='fp32', **cfg)
    return RunLearner(model, short_corpus.train_ids, short_corpus.val_ids, cfg,
                   cbs=[SignalCB(), DivergenceCB(out), CheckpointCB(out)], quiet=quiet)


@pytest.fixture(scope='module')
def api_straight(short_corpus, work) -> RunLearner:
    t = api_trainer(short_corpus, work/'api-straight', 75)
    t.fit()
    t.out = work/'api-straight'
    assert t.steps_per_epoch < 40   # the runs below cross epoch boundaries
    return t


def stop_at(trainer:RunLearner, k:int):
    "Ask `trainer` to stop during step `k` (as the signal handler does)."
    def hook(module, args):
        if module.training and trainer.step == k - 1: trainer.stop('SIGINT')
    trainer.model.register_forward_pre_hook(hook)


@pytest.mark.parametrize('where', ['step 1', 'step 13', 'end of epoch', 'start of epoch'])
def test_api_stop_and_resume_is_bit_exact(short_corpus, api_straight, tmp_path, where):
    spe = api_straight.steps_per_epoch
    k = {'step 1': 1, 'step 13': 13, 'end of epoch': spe, 'start of epoch': spe + 1}[where]
    stopped = api_trainer(short_corpus, tmp_path/'run', 75)
    stop_at(stopped, k)
    stopped.fit()
    assert stopped.stop_reason == 'SIGINT'
    assert stopped.step == k, f"asked to stop during step {k}, it stopped after step {stopped.step}"
    assert_healthy_run(tmp_path/'run', k)
    resumed = resume(api_trainer(short_corpus, tmp_path/'run', 75), read_latest(tmp_path/'run'))
    assert resumed.step == k
    resumed.fit()
    assert resumed.history.train_loss == api_straight.history.train_loss
    assert_same_tensors(api_straight.model.state_dict(), resumed.model.state_dict())
    a = train_state(api_straight.out/'latest.safetensors')
    b = train_state(tmp_path/'run'/'latest.safetensors')
    assert_same_tensors(a.tensors, b.tensors)
    assert_healthy_run(tmp_path/'run', 75)


# ------------------------------------------------------------------ pickles that would run code

class Payload:
    "Unpickling this calls `fn(*args)`: what a malicious checkpoint does."
    def __init__(self, fn, *args): self.fn, self.args = fn, args
    def __reduce__(self): return self.fn, self.args


def evil_files(folder:Path, marker:Path) -> dict:
    "Files whose loading by pickle would create `marker`, by name."
    import io
    touch = Payload(os.system, f'touch {shlex.quote(str(marker))}')
    opener = Payload(open, str(marker), 'w')
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save({'model.fc.weight': opener, 'vocab': 'abc'}, zipped)
    torch.save({'model.fc.weight': opener}, legacy, _use_new_zipfile_serialization=False)
    files = {'evil.safetensors': pickle.dumps(touch, protocol=4),
             'evil.pt': zipped.getvalue(),
             'evil_legacy.pt': legacy.getvalue(),
             'evil_protocol0.safetensors': pickle.dumps(opener, protocol=0),
             'evil_behind_8_bytes.safetensors': bytes(8) + pickle.dumps(touch, protocol=2)}
    for name, data in files.items(): (folder/name).write_bytes(data)
    run = folder/'evil_run'
    run.mkdir()
    (run/'latest.safetensors').write_bytes(files['evil.safetensors'])
    (run/'best.safetensors').write_bytes(files['evil.pt'])
    return {name: folder/name for name in files} | {'evil_run': run}


def test_the_payloads_work(tmp_path):
    "The control: unpickling these files does create the marker, so the tests below mean something."
    marker = tmp_path/'pwned'
    files = evil_files(tmp_path, marker)
    pickle.loads(files['evil.safetensors'].read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(files['evil.pt'], weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError): torch.load(files['evil.pt'], weights_only=True)
    assert not marker.exists()


def test_malicious_pickles_are_refused(tmp_path, text_file, cli):
    marker = tmp_path/'pwned'
    files = evil_files(tmp_path, marker)
    for name, path in files.items():
        with pytest.raises(CheckpointError) as e: load(path)
        assert str(path) in str(e.value)
        if name != 'evil_protocol0.safetensors' and name != 'evil_behind_8_bytes.safetensors':
            assert 'pickle' in str(e.value) and 'never unpickles' in str(e.value)
        r = cli('generate', path, '--length', 5)
        assert_user_error(r, 'generate', str(path))
        assert r.stdout == ''
    r = cli('generate', files['evil_run'], '--length', 5)
    assert_user_error(r, 'generate', 'pickle')
    r = cli('train', text_file, '--out', files['evil_run'], '--resume', *TINY, *DEEP)
    assert_user_error(r, 'train', 'pickle')
    # and as a user runs them: the one line names the file and the pickle
    for name in ('evil.safetensors', 'evil.pt'):
        r = cli('generate', files[name], '--length', 5)
        assert_user_error(r, 'generate', 'pickle', str(files[name]))
    r = cli('train', text_file, '--out', files['evil_run'], '--resume', *TINY, *DEEP, '--max-steps', 4)
    assert_user_error(r, 'train', 'pickle', 'latest.safetensors')
    assert not marker.exists(), "a payload ran"
    assert (files['evil_run']/'latest.safetensors').read_bytes() == files['evil.safetensors'].read_bytes()


# ------------------------------------------------------------------ damaged checkpoints

@pytest.fixture(scope='module')
def good_run(short_corpus, work) -> Path:
    "A short run folder made through the API: best, latest, history.json, loss.png."
    t = api_trainer(short_corpus, work/'good', 12)
    t.fit()
    return work/'good'


def flip(data:bytes, i:int, mask:int=0x01) -> bytes:
    b = bytearray(data)
    b[i] ^= mask
    return bytes(b)


def damaged(data:bytes, vocab:str) -> dict:
    "Broken copies of the checkpoint `data`, by name."
    n = int.from_bytes(data[:8], 'little')
    end = 8 + n
    header = data[8:end]
    def in_header(needle:bytes, skip:int=0) -> int:
        "The position of the byte `skip` after `needle` in the header."
        i = header.find(needle)
        assert i >= 0, needle
        return 8 + i + len(needle) + skip
    # a character of the vocabulary whose neighbour (one bit away) is not in it: a flip there is a silent
    # change
    c = next(ch for ch in vocab if ch.isalpha() and chr(ord(ch) ^ 1) not in vocab)
    cases = {
        'empty': b'', 'zeroed': bytes(len(data)),
        'cut at 1': data[:1], 'cut at 8': data[:8], 'cut at 9': data[:9], 'cut at 100': data[:100],
        'cut in the header': data[:8 + n // 2], 'cut before the data': data[:end - 1],
        'cut at the data': data[:end],
        'cut in the data': data[:(end + len(data)) // 2], 'cut 1 byte short': data[:-1],
        'flip in the first tensor byte': flip(data, end),
        'flip in the data': flip(data, (end + len(data)) // 2),
        'flip in the last byte': flip(data, len(data) - 1, 0xFF),
        'flip in the header length': flip(data, 0), 'flip of the header brace': flip(data, 8),
        'flip in a vocabulary character': flip(data, 8 + header.index(c.encode(), header.index(b'"vocab"'))),
        'flip in the model config': flip(data, in_header(b'\\"hidden\\": ')),
        'flip in the summary step': flip(data, in_header(b'{\\"step\\": ')),
        'flip in a tensor dtype': flip(data, in_header(b'"dtype":"')),
        'flip in a tensor offset': flip(data, in_header(b'"data_offsets":[')),
        'flip in the format name': flip(data, in_header(b'"format":"')),
        'flip in the checksum': flip(data, in_header(b'"tensors_sha256":"', 5)),
    }
    if b'train_state' in header:
        cases['flip in the training step'] = flip(data, in_header(b'[\\"step\\", '))
        cases['flip in the data position'] = flip(data, in_header(b'[\\"window\\", '))
    return cases


def test_damaged_checkpoints_give_clear_errors(good_run, text_file, tmp_path, cli):
    for name in ('latest.safetensors', 'best.safetensors'):
        data = (good_run/name).read_bytes()
        vocab = header_meta(good_run/name)['vocab']
        for case, bad in damaged(data, vocab).items():
            run = tmp_path/f'{name}-{case}'.replace(' ', '_')
            run.mkdir()
            path = run/name
            path.write_bytes(bad)
            with pytest.raises(CheckpointError) as e: load(path)
            msg = str(e.value)
            assert str(path) in msg, (case, msg)
            words = ('truncated', 'corrupt', 'not a charrnn checkpoint', 'format version', 'usable model')
            assert any(w in msg for w in words), (case, msg)
            r = cli('generate', path, '--length', 5)
            assert_user_error(r, 'generate', str(path))
            if name == 'latest.safetensors':
                r = cli('train', text_file, '--out', run, '--resume', *TINY, *DEEP)
                assert_user_error(r, 'train', str(path))
                assert path.read_bytes() == bad, "a failed resume changed the checkpoint"
                assert sorted(q.name for q in run.iterdir()) == ['latest.safetensors'], case


def test_damaged_checkpoints_through_the_command(good_run, text_file, tmp_path, cli):
    data = (good_run/'latest.safetensors').read_bytes()
    cases = damaged(data, header_meta(good_run/'latest.safetensors')['vocab'])
    for case in ('cut in the data', 'flip in the training step'):
        run = tmp_path/case.replace(' ', '_')
        run.mkdir()
        (run/'latest.safetensors').write_bytes(cases[case])
    r = cli('generate', tmp_path/'cut_in_the_data'/'latest.safetensors', '--length', 5)
    assert_user_error(r, 'generate', 'latest.safetensors', 'truncated')
    r = cli('train', text_file, '--out', tmp_path/'flip_in_the_training_step', '--resume', *TINY, *DEEP,
            '--max-steps', 4)
    assert_user_error(r, 'train', 'latest.safetensors', 'corrupt')


@pytest.fixture(scope='module')
def smallest_run(short_corpus, work) -> Path:
    "A run of the smallest model, with a short header, for the byte-by-byte tests."
    t = RunLearner(CharModel(short_corpus.vocab, hidden=4, layers=1, dropout=0.), short_corpus.train_ids,
                short_corpus.val_ids,
                TrainConfig(batch_size=2, seq_len=8, max_steps=2, eval_every=2, precision='fp32'),
                cbs=[CheckpointCB(work/'smallest')], quiet=True)
    t.fit()
    return work/'smallest'


@pytest.mark.parametrize('name', ['best.safetensors', 'latest.safetensors'])
def test_every_header_byte_flipped(smallest_run, tmp_path, name):
    "A bit flipped anywhere in the header (its length, the JSON) is caught, or changes nothing that is read."
    data = (smallest_run/name).read_bytes()
    tensors0, meta0 = read_checkpoint(smallest_run/name)[:2]
    end = 8 + int.from_bytes(data[:8], 'little')
    # every byte of the short best.safetensors header; a fixed sample of latest's (its training state makes it
    # long)
    if name == 'best.safetensors': where = range(end)
    else: where = sorted({*range(64), *random.Random(0).sample(range(end), 1200)})
    path = tmp_path/name
    silent = []
    for i in where:
        path.write_bytes(flip(data, i))
        try: tensors, meta = read_checkpoint(path)[:2]
        except CheckpointError: continue
        same = all(torch.equal(tensors[k], tensors0[k]) and tensors[k].dtype == tensors0[k].dtype
                   for k in tensors0)
        if meta != meta0 or sorted(tensors) != sorted(tensors0) or not same:
            silent.append(i)
    examples = [data[i - 20:i + 10] for i in silent[:3]]
    assert silent == [], (f"{len(silent)} of {len(where)} flipped header bytes were read without an error "
                          f"as a different checkpoint, e.g. at {silent[:5]}: {examples}")


# ------------------------------------------------------------------ the divergence guard

def finite_checkpoints(folder:Path) -> bool:
    for name in ('latest.safetensors', 'best.safetensors'):
        if (folder/name).exists():
            tensors = read_checkpoint(folder/name).tensors
            floats = [t for t in tensors.values() if t.is_floating_point()]
            if not all(torch.isfinite(t).all() for t in floats): return False
    return True


def test_nan_loss_rolls_back_once_then_stops(short_corpus, tmp_path, capsys):
    out = tmp_path/'nan'
    t = api_trainer(short_corpus, out, 60, quiet=False)
    # from step 15 on every output is NaN, as after a numerical blow-up
    t.model.fc.register_forward_hook(lambda mod, args, y: y * float('nan') if t.step >= 14 else y)
    capsys.readouterr()
    with pytest.raises(TrainingDiverged) as e: t.fit()
    log = capsys.readouterr().out
    msg = str(e.value)
    assert 'diverged' in msg and 'step 15' in msg, msg
    assert 'lower the learning rate' in msg and str(out) in msg, msg
    assert log.count('rolling back') == 1 and 'halving the learning rate' in log, log
    assert t.lr_scale == 0.5
    assert math.isclose(float(re.search(r'now ([\d.e+-]+)\)', msg).group(1)), t.cfg.lr / 2, rel_tol=1e-3), msg
    state = assert_healthy_run(out, 14)   # the checkpoint before the NaN, every 2 steps as asked
    assert state['lr_scale'] == 1.0
    assert finite_checkpoints(out)
    assert all(math.isfinite(l) for l in t.history.train_loss)
    history = json.loads((out/'history.json').read_text())
    assert all(math.isfinite(e['val_loss']) for e in history['evals'])


def test_non_finite_weights_are_never_saved(short_corpus, tmp_path):
    """Weights that turn infinite in a step whose loss was still finite are caught before a checkpoint holds
    them."""
    out = tmp_path/'inf'
    t = api_trainer(short_corpus, out, 40)
    real_step = t.opt.step
    def poisoned_step(*args, **kw):
        r = real_step(*args, **kw)
        if t.step == 5:   # the update of step 6 makes a weight infinite
            with torch.no_grad(): t.model.fc.bias[0] = float('inf')
        return r
    t.opt.step = poisoned_step
    with pytest.raises(TrainingDiverged) as e: t.fit()
    assert 'step 6' in str(e.value), str(e.value)
    assert finite_checkpoints(out)
    assert_healthy_run(out, 4)


def test_non_finite_validation_loss_stops(short_corpus, tmp_path):
    out = tmp_path/'val-nan'
    t = api_trainer(short_corpus, out, 40)
    def inf_in_validation(mod, args, y): return y * float('inf') if not mod.training and t.step >= 20 else y
    t.model.fc.register_forward_hook(inf_in_validation)
    with pytest.raises(TrainingDiverged) as e: t.fit()
    assert 'validation' in str(e.value) and 'step 20' in str(e.value), str(e.value)
    assert finite_checkpoints(out)
    history = json.loads((out/'history.json').read_text())
    assert all(math.isfinite(e['val_loss']) for e in history['evals'])
    assert_healthy_run(out, 18)


def test_absurd_learning_rate_on_the_command_line(text_file, tmp_path, cli):
    out = tmp_path/'lr'
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--lr', '1e38', '--max-steps', 40,
            '--checkpoint-every', 2)
    warning, *rest = r.stderr.strip().splitlines()  # first, one line that warns of such a learning rate
    assert warning.startswith('warning: --lr 1e+38 is far outside'), r
    # then one line, and exit status 1: not a user error (status 2), a run that failed
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r
    assert len(rest) == 1 and rest[0].startswith('charrnn train: error: '), r
    line = rest[0]
    for needle in ('training diverged', 'learning rate'): assert needle in line.lower(), r
    assert finite_checkpoints(out)
    if not (out/'latest.safetensors').exists():   # no checkpoint to speak of: the message must not claim one
        assert 'checkpoint is kept' not in line, line
    if out.exists(): assert leftovers(out) == []


# ------------------------------------------------------------------ out of memory

def test_out_of_memory_while_training(text_file, tmp_path, monkeypatch, cli):
    real = Learner.train_step
    def oom_at_step_7(self, x, y):
        if self.step == 6: raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, x, y)
    monkeypatch.setattr(Learner, 'train_step', oom_at_step_7)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    out = tmp_path/'oom'
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 20, '--checkpoint-every', 2)
    assert_user_error(r, 'train', 'out of memory', '--batch-size', '--seq-len')
    assert 'CUDA out of memory. Tried' not in r.stderr    # torch's own long message stays out of the way
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert_healthy_run(out, 6)


def test_out_of_memory_while_generating(good_run, monkeypatch, cli):
    def oom(*args, **kw): raise torch.OutOfMemoryError("CUDA out of memory.")
    monkeypatch.setattr(charrnn.cli, 'generate_text', oom)
    r = cli('generate', good_run, '--num-samples', 1000)
    assert_user_error(r, 'generate', 'out of memory', '--num-samples')
    assert r.stdout == ''


# ------------------------------------------------------------------ another text

def test_resume_with_other_characters(text_file, tmp_path, cli):
    out = tmp_path/'run'
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 4, '--checkpoint-every', 2)
    assert r.returncode == 0, r
    before = (out/'latest.safetensors').read_bytes()
    other = tmp_path/'other.txt'   # 'é', 'z', 'Z' and '@' are new; '?' and '!' are gone
    other_text = make_text(30_000, seed=1, words=WORDS + ['zéro', 'Zoo@'], marks='.,;:')
    other.write_text(other_text, encoding='utf-8')
    r = cli('train', other, '--out', out, '--resume', *TINY, *DEEP)
    line = assert_user_error(r, 'train', 'characters differ')
    for ch in 'éZz@?!': assert f'U+{ord(ch):04X}' in line, (ch, line)
    new = line.index('new:')
    missing = line.index('missing:')
    assert all(new < line.index(f'U+{ord(ch):04X}') < missing for ch in 'éZz@'), line
    assert (out/'latest.safetensors').read_bytes() == before


# ------------------------------------------------------------------ failed and interrupted writes

def test_interrupt_in_the_middle_of_a_checkpoint_write(short_corpus, tmp_path, monkeypatch):
    """A second Ctrl-C (KeyboardInterrupt) while latest.safetensors is being written: the old one stands, no
    temp file."""
    out = tmp_path/'run'
    t = api_trainer(short_corpus, out, 20)
    real_fsync = os.fsync
    def fsync(fd):
        if t.step >= 6: raise KeyboardInterrupt
        return real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    with pytest.raises(KeyboardInterrupt): t.fit()
    monkeypatch.setattr(os, 'fsync', real_fsync)
    assert_healthy_run(out, 4)


def test_full_disk_while_writing(text_file, tmp_path, monkeypatch, cli):
    """The disk fills up while the checkpoint of step 6 is written: one line naming the file, the one of step
    4 stands."""
    real_fsync = os.fsync
    real_save = CheckpointCB.save_latest
    full = []
    def save_latest(self, learn):
        if learn.step >= 6: full.append(learn.step)
        return real_save(self, learn)
    def fsync(fd):
        if full: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)
    monkeypatch.setattr(CheckpointCB, 'save_latest', save_latest)
    monkeypatch.setattr(os, 'fsync', fsync)
    out = tmp_path/'run'
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 20, '--checkpoint-every', 2,
            '--eval-every', 10)
    monkeypatch.setattr(os, 'fsync', real_fsync)
    assert_user_error(r, 'train', os.strerror(errno.ENOSPC), str(out/'latest.safetensors'))
    assert_healthy_run(out, 4)


def test_error_while_writing_the_plot(short_corpus, tmp_path, monkeypatch):
    """The loss plot is written atomically too: a failure half-way leaves neither a broken loss.png nor a temp
    file."""
    from matplotlib.figure import Figure
    out = tmp_path/'run'
    t = api_trainer(short_corpus, out, 6)
    real = Figure.savefig
    def savefig(self, fname, *args, **kw):
        if isinstance(fname, (str, os.PathLike)): Path(fname).write_bytes(b'\x89PNG half a plot')
        else: fname.write(b'\x89PNG half a plot')
        raise KeyboardInterrupt
    monkeypatch.setattr(Figure, 'savefig', savefig)
    with pytest.raises(KeyboardInterrupt): t.fit()
    monkeypatch.setattr(Figure, 'savefig', real)
    assert not (out/'loss.png').exists()
    assert_healthy_run(out, 6)


def test_the_next_run_removes_what_a_sigkill_left(text_file, tmp_path, cli):
    "SIGKILL cannot be caught: a write cut short leaves its temporary file, which the next run removes."
    out = tmp_path/'run'
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 4, '--checkpoint-every', 2)
    assert r.returncode == 0, r
    stale = ['.latest.safetensors.k2j4_x9a.tmp', '.best.safetensors.a8d_1kqz.tmp',
             '.history.json.3x0_pq7f.tmp', '.loss.png.9ab_cdef.tmp']
    for name in stale: (out/name).write_bytes(b'half a file')
    (out/'notes.txt').write_text('mine')
    r = cli('train', text_file, '--out', out, '--resume', *TINY, *DEEP, '--max-steps', 6)
    assert r.returncode == 0, r
    assert_healthy_run(out, 6)
    assert (out/'notes.txt').read_text() == 'mine'


def test_sigkill_then_resume(work, text_file, run_cli):
    "One SIGKILL in the middle of a run (bench/kill_test.py does this many times in a row)."
    out = work/'killed'
    p = start_train(text_file, out, *RUN_ARGS)
    try:
        started = wait_until(past_step(out/'latest.safetensors', 6), p)
        assert started, "the run ended before it could be killed"
        p.kill()
        p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == -signal.SIGKILL
    state = train_state(out/'latest.safetensors').state   # loads, whatever the moment of the kill
    assert 6 <= state['step'] < STEPS
    r = run_cli('train', text_file, '--out', out, '--resume', '--device', 'cpu', timeout=TIMEOUT)
    assert r.returncode == 0, r
    assert_healthy_run(out, STEPS)


def test_resuming_a_finished_run_takes_no_further_step(text_file, tmp_path, cli):
    """A run killed after its last checkpoint (while it wrote its plot) and resumed stays at its planned step
    count."""
    out = tmp_path/'run'
    args = ['train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 6, '--checkpoint-every', 2]
    r = cli(*args)
    assert r.returncode == 0, r
    before = train_state(out/'latest.safetensors').tensors
    r = cli(*args, '--resume')
    assert r.returncode == 0, r
    after = train_state(out/'latest.safetensors').tensors
    assert_same_tensors(before, after)
    assert_healthy_run(out, 6)


def test_killed_before_the_first_latest_checkpoint(text_file, tmp_path, cli):
    """A run killed between writing its first best.safetensors and its first latest.safetensors: its files are
    never overwritten (issue 19: best.safetensors alone is a run's), and once they are moved away, the run
    starts again."""
    out = tmp_path/'run'
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 2, '--eval-every', 2)
    assert r.returncode == 0, r
    (out/'latest.safetensors').unlink()        # as if killed just before it was written
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = cli('train', text_file, '--out', out, '--resume', *TINY, *DEEP, '--max-steps', 2)
    assert_user_error(r, 'train', 'nothing to resume')
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 2, '--eval-every', 2)
    assert_user_error(r, 'train', 'best.safetensors', 'another --out', 'move those files away')
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    for name in before: (out/name).rename(tmp_path/name)
    r = cli('train', text_file, '--out', out, *TINY, *DEEP, '--max-steps', 2, '--eval-every', 2)
    assert r.returncode == 0, r
    assert_healthy_run(out, 2)


# ------------------------------------------------------------------ one run per folder (issue 14)

import fcntl

from charrnn.batching import eval_batcher
from charrnn.training import evaluate


def lock_is_free(path:Path) -> bool:
    "Whether nobody holds the lock on `path` (the test takes it, and lets it go at once)."
    with open(path) as f:
        try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError: return False
        fcntl.flock(f, fcntl.LOCK_UN)
    return True


def folder_bytes(folder:Path) -> dict:
    return {q.name: q.read_bytes() for q in sorted(folder.iterdir())}


def test_a_second_trainer_into_a_locked_folder_exits_2(work, text_file, straight, run_cli):
    """While a run trains, `charrnn generate` reads its folder (checkpoints are replaced atomically: every
    read sees a whole file). A second `charrnn train` into the folder, new or `--resume`, exits 2 at once with
    one line naming the folder and the holder's process id, and changes nothing; the first run ends exactly as
    one nobody disturbed. The first run is paused with SIGSTOP while the others try (it holds its lock all the
    while), so that the test does not depend on how fast the machine is. The others are real processes too:
    one run's lock against another's."""
    out = work/'locked'
    p = start_train(text_file, out, *RUN_ARGS)
    try:
        started = wait_until(past_step(out/'latest.safetensors', 2), p)
        assert started, "the run ended before the test could use it"
        loads = 0
        # reading while latest is replaced
        while p.poll() is None and ckpt_step(out/'latest.safetensors') < 12:
            assert load(out).summary['step'] >= 2
            loads += 1
        assert loads > 0
        p.send_signal(signal.SIGSTOP)
        assert int((out/'train.lock').read_text()) == p.pid and not lock_is_free(out/'train.lock')
        before = folder_bytes(out)
        for args in [(text_file, '--out', out, *TINY, *DEEP, '--max-steps', 10),   # a new run
                     ('--out', out, '--resume'),                          # a resume, from the folder alone
                     (text_file, '--out', out, '--resume', *TINY, *DEEP)]:         # a resume, as before
            r = run_cli('train', *args)
            assert_user_error(r, 'train', f'{out} is in use', f'process {p.pid}')
            assert r.stdout == ''
        g = run_cli('generate', out, '--length', 20, '--seed', 0)
        assert g.returncode == 0 and len(g.stdout) == 21, g
        assert folder_bytes(out) == before, "a refused run changed the folder"
        p.send_signal(signal.SIGCONT)
        stdout, stderr = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
    assert p.returncode == 0, stderr
    assert_healthy_run(out, STEPS)
    assert not (out/'train.lock').exists()
    assert_same_tensors(train_state(straight/'latest.safetensors').tensors,
                        train_state(out/'latest.safetensors').tensors)


def test_a_sigkill_leaves_no_stale_lock(work, text_file, run_cli):
    """SIGKILL cannot be caught, so the lock file stays, with the dead run's process id; but nobody holds its
    lock."""
    out = work/'killed-holding-the-lock'
    p = start_train(text_file, out, *RUN_ARGS)
    try:
        started = wait_until(past_step(out/'latest.safetensors', 4), p)
        assert started, "the run ended before it could be killed"
        assert not lock_is_free(out/'train.lock')
        p.kill()
        p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == -signal.SIGKILL
    assert int((out/'train.lock').read_text()) == p.pid and lock_is_free(out/'train.lock')
    r = run_cli('train', '--out', out, '--resume', '--max-steps', 8, '--device', 'cpu', timeout=TIMEOUT)
    assert r.returncode == 0, r
    assert_healthy_run(out, 8)
    assert not (out/'train.lock').exists()


# ---------------------------------------------------------- resume from the folder alone; bounded validation

SEEDED = [*TINY, *DEEP, '--seed', 4, '--val-chars', 3000, '--sample-chars', 30, '--max-steps', STEPS,
          '--checkpoint-every', 2, '--eval-every', 20]


@pytest.fixture(scope='module')
def seeded(work, text_file, run_cli) -> SimpleNamespace:
    """The issue's case: a run with a seed and other settings of its own, stopped by SIGTERM, then resumed by
    running the command its message prints, verbatim, in a shell; and the same run, not interrupted."""
    straight = work/'seeded-straight'
    r = run_cli('train', text_file, '--out', straight, *SEEDED, timeout=TIMEOUT)
    assert r.returncode == 0, r
    out = work/'seeded'
    p = start_train(text_file, out, *SEEDED)
    try:
        started = wait_until(past_step(out/'latest.safetensors', 4), p)
        assert started, "the run ended before it could be interrupted"
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 128 + signal.SIGTERM, stderr
    m = re.search(r'Resume with: (.*)$', stderr, re.M)
    assert m, stderr
    command = m.group(1)
    # verbatim, in a shell, with the console script on the PATH (no GPU: 'auto' picks the CPU the run trained
    # on)
    resumed = run_cli(exe=['/bin/sh', '-c', command], env={'CUDA_VISIBLE_DEVICES': ''}, timeout=TIMEOUT)
    return SimpleNamespace(straight=straight, out=out, command=command, stop_stderr=stderr, resumed=resumed)


def test_the_stop_message_resume_command_works_verbatim(seeded):
    expected = f"charrnn train --out {shlex.quote(str(seeded.out))} --resume"
    assert seeded.command == expected, seeded.stop_stderr
    r = seeded.resumed
    assert r.returncode == 0, r
    assert re.search(r'resuming at step \d+', r.stdout) and 'note:' not in r.stdout, r.stdout
    a = train_state(seeded.straight/'latest.safetensors')
    b = train_state(seeded.out/'latest.safetensors')
    a_state = a.state
    b_state = b.state
    assert a_state['step'] == b_state['step'] == STEPS
    # weights, optimizer, hidden state, RNG states, every loss: bit for bit
    assert_same_tensors(a.tensors, b.tensors)
    assert a_state['config'] == b_state['config'] and b_state['config']['seed'] == 4
    assert_healthy_run(seeded.out, STEPS)


def test_the_validation_character_count_holds(seeded, text_file):
    """Every validation scores the first --val-chars characters of the validation text, and history.json says
    how many."""
    val_ids = prepare_text(text_file)[2]
    assert len(val_ids) > 3000
    scored = eval_batcher(val_ids[:3000])
    n = scored.batch_size * scored.n   # (the streams leave out fewer characters than there are streams)
    assert 3000 - scored.batch_size <= n <= 3000
    for run in (seeded.straight, seeded.out):
        evals = json.loads((run/'history.json').read_text())['evals']
        assert [e['step'] for e in evals][-1] == STEPS and len(evals) >= 3
        assert {e['val_chars'] for e in evals} == {n}, evals
        assert all(len(e['sample']) == 30 + 1 for e in evals)   # --sample-chars 30, after the prime '\n'
    best = load(seeded.straight/'best.safetensors')
    val = best.summary['best_val_loss']
    assert math.isclose(evaluate(best, scored, 'fp32'), val, rel_tol=1e-6)   # those characters, and no others
    assert not math.isclose(evaluate(best, eval_batcher(val_ids), 'fp32'), val, rel_tol=1e-3)
    lines = [l for l in seeded.resumed.stdout.splitlines() if l.startswith('step')]
    assert lines and all(f'{n:,} chars)' in l for l in lines), lines


def test_resuming_checks_the_text_and_the_settings(seeded, text_file, tmp_path, cli):
    """A TEXT given with --resume must be the run's (another path to the same bytes is fine); explicit flags
    are checked."""
    run = tmp_path/'run'
    shutil.copytree(seeded.out, run)
    same = tmp_path/'same.txt'
    shutil.copy(text_file, same)
    r = cli('train', same, '--out', run, '--resume', '--device', 'cpu')
    assert r.returncode == 0 and 'note:' not in r.stdout, r
    other = tmp_path/'shuffled.txt'   # the same characters, another text
    lines = text_file.read_text(encoding='utf-8').splitlines(keepends=True)
    other.write_text(''.join(reversed(lines)), encoding='utf-8')
    r = cli('train', other, '--out', run, '--resume', '--device', 'cpu')
    assert r.returncode == 0 and 'note: the text differs' in r.stdout, r
    before = folder_bytes(run)
    for flags, needle in [(['--val-chars', 'all'], "--val-chars (3000 there, all here)"),
                          (['--seed', 0], '--seed (4 there, 0 here)')]:
        r = cli('train', '--out', run, '--resume', '--device', 'cpu', *flags)
        assert_user_error(r, 'train', needle)
    r = cli('train', '--out', tmp_path/'new', '--device', 'cpu')
    assert_user_error(r, 'train', 'no text to train on', '--resume')
    assert not (tmp_path/'new').exists()
    assert folder_bytes(run) == before


def test_resume_from_the_folder_alone_when_the_text_is_gone(text_file, tmp_path, monkeypatch, cli):
    """A resume that names no text reads the file the run recorded (by its absolute path); if it is gone, one
    line says so."""
    text = tmp_path/'mine.txt'
    shutil.copy(text_file, text)
    run = tmp_path/'run'
    monkeypatch.chdir(tmp_path)
    r = cli('train', 'mine.txt', '--out', run, *TINY, *DEEP, '--max-steps', 4, '--checkpoint-every', 2)
    assert r.returncode == 0, r
    assert header_meta(run/'latest.safetensors')['summary']['corpus']['path'] == str(text)
    monkeypatch.chdir(run)   # elsewhere: the relative path the run was given would not be found from here
    r = cli('train', '--out', run, '--resume', '--max-steps', 6, '--device', 'cpu')
    assert r.returncode == 0, r
    assert assert_healthy_run(run, 6)['step'] == 6
    text.unlink()
    r = cli('train', '--out', run, '--resume', '--max-steps', 8, '--device', 'cpu')
    assert_user_error(r, 'train', str(text), 'not there', f'charrnn train TEXT --out {run} --resume')


# --- a signal while the run's lock is being taken ---------------------------------------------------------
import contextlib, threading
import charrnn.resilience as resilience_module
from charrnn.resilience import PrepSignals, StoppedEarly, run_lock


@pytest.fixture
def signal_in_take_lock(monkeypatch):
    "`_take_lock` delivers SIGINT to this process just before it returns: the narrowest window there is."
    real = resilience_module._take_lock
    def take_then_signal(path):
        fd = real(path)
        os.kill(os.getpid(), signal.SIGINT)  # without held signals, StoppedEarly is raised here
        return fd
    monkeypatch.setattr(resilience_module, '_take_lock', take_then_signal)
    stop = threading.Event()  # a second thread, as torch and IPython start: it may be handed the signal
    threading.Thread(target=stop.wait, daemon=True).start()
    yield
    stop.set()


@pytest.mark.parametrize('existing', [False, True])
def test_a_signal_while_the_lock_is_taken_leaves_no_lock(tmp_path, signal_in_take_lock, existing):
    "Ctrl-C between creating `train.lock` and recording it: the file is removed (CI once saw one left)."
    run = tmp_path/'run'
    if existing:
        run.mkdir()
        (run/'best.safetensors').write_bytes(b'weights')
    with pytest.raises(StoppedEarly), PrepSignals():
        with run_lock(run): pass
    assert not (run/'train.lock').exists()
    assert run.exists() == existing
    if existing: assert (run/'best.safetensors').read_bytes() == b'weights'


def test_without_held_signals_the_lock_is_left(tmp_path, signal_in_take_lock, monkeypatch):
    "The same signal, signals not held (the code before the fix): the lock is left; the test above can fail."
    monkeypatch.setattr(resilience_module, 'held_signals', contextlib.nullcontext)
    with pytest.raises(StoppedEarly), PrepSignals():
        with run_lock(tmp_path/'run'): pass
    assert (tmp_path/'run'/'train.lock').exists()
