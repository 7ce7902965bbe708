"""Sampling that stays correct at the edges (issue 19 item 6, issue 23): a long prime is read in windows
with bounded memory, a temperature whose scores overflow is greedy, `--weights int8` is opt-in and refused
where it cannot run, and a model that is not an LSTM or GRU is sampled through the plain forward pass.
Correctness only: nothing here depends on speed (`bench/sampling.py` measures that)."""
import json, sys

import pytest
import torch

from conftest import assert_user_error
from charrnn.checkpoint import bundled_model, save
from charrnn.decoding import decode_ids
from charrnn.encoding import Vocab
from charrnn.generation import Sampler, generate_ids
from charrnn.model import CharModel

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def model():
    return bundled_model()


def printed(r) -> tuple:
    "What a command did, without the command: (exit status, stdout, stderr)."
    return r.returncode, r.stdout, r.stderr


def test_long_prime_is_read_in_windows(model, monkeypatch):
    "A 50,000-character prime reaches the model 4,096 positions at a time, and goes on as one pass would."
    prime = ('ROMEO:\nWhat light through yonder window breaks?\n' * 1100)[:50_000]
    lengths, forward = [], CharModel.forward
    def recording(self, x, hidden=None):
        lengths.append(x.shape[1])
        return forward(self, x, hidden)
    monkeypatch.setattr(CharModel, 'forward', recording)
    ids = generate_ids(model, prime, 20, seed=0, sampler=Sampler(0), fast=False)
    assert max(lengths) <= 4096 and sum(lengths) == len(prime) + 20, lengths[:20]
    lengths.clear()
    two = generate_ids(model, prime, 20, num_samples=2, seed=0, sampler=Sampler(0), fast=False)
    assert max(lengths) <= 2048, 'the window is shared out over the streams'
    assert (two == ids).all()
    monkeypatch.undo()
    p = model.vocab.encode(prime).long().view(1, -1)
    one_pass = decode_ids(model, p, 20, Sampler(0), noisy=False, window=len(prime))
    assert (one_pass == ids).all(), 'windows continue the state exactly where the previous one left it'


RSS = """\
import resource, sys, json
from charrnn.cli import main
rc = 0
try: main(sys.argv[1:])
except SystemExit as e: rc = e.code
print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rc]), file=sys.stderr)
"""


def _peak_rss_mb(run_cli, *args):
    "The peak resident memory (MB) of a fresh process running `charrnn ARGS`, and its exit status."
    r = run_cli(*args, exe=[sys.executable, '-c', RSS], timeout=300)  # a process of its own, for its own peak
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_one_megabyte_prime_file_has_bounded_memory(tmp_path, run_cli):
    "`--prime-file` of 1 MB: the process peaks no higher than with a 10-character prime, give or take 150 MB."
    vocab = Vocab('ROMEO:\n abcdefghijklmnopqrstuvwxyz')
    torch.manual_seed(0)
    ckpt = save(CharModel(vocab, hidden=16, layers=1, dropout=0.), tmp_path/'tiny.safetensors')
    line = 'ROMEO:\nthe quick brown fox jumps over the lazy dog\n'
    (tmp_path/'big.txt').write_text((line * (1_000_000 // len(line) + 1))[:1_000_000])
    (tmp_path/'small.txt').write_text(line[:10])
    args = ['generate', ckpt, '--length', 5, '--seed', 0, '--prime-file']
    small, rc_small = _peak_rss_mb(run_cli, *args, tmp_path/'small.txt')
    big, rc_big = _peak_rss_mb(run_cli, *args, tmp_path/'big.txt')
    assert rc_small == rc_big == 0
    assert big < small + 150, f'peak {big:.0f} MB with a 1 MB prime against {small:.0f} MB with a short one'


@pytest.mark.parametrize('extra', [[], ['--top-k', 3], ['--top-p', 0.9], ['--min-p', 0.1]])
def test_overflowing_temperature_is_greedy(cli, extra):
    "A temperature of 1e-40 (scores / T overflow float32) writes the greedy text, with every filter, no NaN."
    base = ['generate', '--prime', 'ROMEO:', '--length', 150, '--seed', 1]
    greedy = printed(cli(*base, '--temperature', 0))
    for t in ('1e-30', '1e-40', '5e-324'):
        assert printed(cli(*base, '--temperature', t, *extra)) == greedy, (t, extra)


def test_overflowing_temperature_fast_and_plain(model):
    "The fast decoder and the plain forward pass agree at such a temperature too (both run the same Sampler)."
    s = Sampler(1e-40, top_p=0.9)
    fast, plain = (generate_ids(model, 'JULIET:', 80, 3, seed=2, sampler=s, fast=f) for f in (True, False))
    assert (fast == plain).all() and (fast == generate_ids(model, 'JULIET:', 80, 3, sampler=Sampler(0))).all()


def test_weights_int8_is_opt_in_and_reproducible(cli):
    "`--weights int8`: the same seed gives the same text, of the length asked; fp32 is the default."
    args = ['generate', '--prime', 'ROMEO:', '--length', 200, '--seed', 3, '--weights']
    a = printed(cli(*args, 'int8'))
    b = printed(cli(*args, 'int8'))
    exact = printed(cli(*args, 'fp32'))
    assert a == b and a[0] == 0 and a[1].startswith('ROMEO:') and len(a[1]) == len('ROMEO:') + 200 + 1
    assert exact == printed(cli(*args[:-1]))


@pytest.mark.parametrize('cell,weights,msg', [
    ('lstm', 'int4', "--weights must be fp32 or int8, not 'int4'"),
    ('gru', 'int8', '--weights int8 is for an LSTM on the CPU, and this is a GRU')])
def test_weights_refused_in_one_line(cli, tmp_path, cell, weights, msg):
    vocab = Vocab('ROMEO:\n abc')
    ckpt = save(CharModel(vocab, cell=cell, hidden=8, layers=1, dropout=0.), tmp_path/'m.safetensors')
    r = cli('generate', ckpt, '--length', 5, '--weights', weights)
    assert_user_error(r, 'generate', msg)  # status 2, one line, nothing on stdout
    assert msg in r.stderr and r.stderr.count('\n') == 1, r


def test_fast_path_only_for_lstm_and_gru(model):
    "A transformer is sampled through `model(ids, hidden)` even with fast=True: the same ids as fast=False."
    pytest.importorskip('charrnn.transformer')
    torch.manual_seed(0)
    m = CharModel(model.vocab, cell='transformer', hidden=32, layers=1, dropout=0.).eval()
    s = Sampler(1.0, top_k=5)
    fast, plain = (generate_ids(m, 'ROMEO:', 40, 2, seed=4, sampler=s, fast=f) for f in (True, False))
    assert (fast == plain).all() and fast.shape == (2, 40)
