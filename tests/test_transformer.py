"""`--cell transformer` (lesson 07) wherever the LSTM goes: the command line, checkpoints, the KV cache.

In-process (`charrnn.cli.main`), with tiny settings: a 2-block Transformer of width 32 trained a few steps
on the first 20,000 characters of tiny Shakespeare (conftest's `corpus`). Checked: train, generate,
evaluate, an exact resume and --init-from; a checkpoint rebuilds a model with identical logits; one
character at a time through the cache gives the logits of one pass over the same text, also past the
context, and each position's logits are those of a fresh pass over what it may see; every bad setting is
one line, exit status 2.
"""
from __future__ import annotations

import math

import pytest
import torch

import charrnn.cli
from conftest import Result, assert_user_error, run_main, snapshot
from charrnn.checkpoint import load, read_checkpoint, save
from charrnn.encoding import Vocab
from charrnn.model import CharModel, map_hidden
from charrnn.transformer import Transformer

TINY_TFM = ['--cell', 'transformer', '--hidden', '32', '--layers', '2', '--heads', '2', '--batch-size', '4',
            '--seq-len', '16', '--precision', 'fp32', '--device', 'cpu', '--seed', '0']



@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    "Every test gets an empty charrnn cache folder."
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))


def small_model(context:int=8, seed:int=0) -> CharModel:
    "A tiny Transformer in eval mode."
    torch.manual_seed(seed)
    model = CharModel(Vocab('abcdefghij \n'), cell='transformer', hidden=32, layers=2, heads=4,
                      context=context, dropout=0.)
    return model.eval()


# ------------------------------------------------------------------ the command line

def test_train_generate_evaluate_resume(corpus, tmp_path, capsys):
    "A Transformer run's whole life through the command line; a resumed run equals an uninterrupted one."
    run, straight = tmp_path/'run', tmp_path/'straight'
    const = ['--schedule', 'constant']  # (a cosine schedule's length changes with --max-steps)
    r = run_main(['train', corpus, '--out', run, *TINY_TFM, *const, '--max-steps', 6, '--eval-every', 3],
                 capsys)
    assert r.returncode == 0, str(r)
    assert 'TRANSFORMER 2×32' in r.stdout and 'best model:' in r.stdout, str(r)
    model = load(run)
    assert isinstance(model.rnn, Transformer)
    # --context defaults to --seq-len
    assert (model.cfg.cell, model.cfg.heads, model.cfg.context) == ('transformer', 2, 16)
    assert model.summary['step'] == 6

    gen = ['generate', run, '--length', 60, '--seed', 1, '--device', 'cpu']
    texts = [run_main(gen, capsys) for _ in range(2)]
    assert texts[0].returncode == 0, str(texts[0])
    assert texts[0].stdout == texts[1].stdout                         # the same seed, the same text
    assert len(texts[0].stdout) == 61 and set(texts[0].stdout) <= set(model.vocab.itos)  # 60 chars, newline

    r = run_main(['evaluate', run, corpus, '--device', 'cpu'], capsys)
    assert r.returncode == 0, str(r)
    nats = float(r.stdout.split('model: ')[1].split()[0])
    assert 0 < nats < math.log(len(model.vocab)) + 0.5, r.stdout

    r = run_main(['train', '--out', run, '--resume', '--max-steps', 9, '--device', 'cpu'], capsys)
    assert r.returncode == 0 and 'resuming at step 6' in r.stdout, str(r)
    r = run_main(['train', corpus, '--out', straight, *TINY_TFM, *const, '--max-steps', 9, '--eval-every', 3],
                 capsys)
    assert r.returncode == 0, str(r)
    resumed = read_checkpoint(run/'latest.safetensors')[0]
    whole = read_checkpoint(straight/'latest.safetensors')[0]
    for k, v in whole.items():
        if k.startswith('model.'): assert torch.equal(resumed[k], v), k


def test_init_from_a_transformer(corpus, tmp_path, capsys):
    "--init-from a Transformer run keeps its shape and grows its vocabulary to a text with new characters."
    src = tmp_path/'src'
    r = run_main(['train', corpus, '--out', src, *TINY_TFM, '--max-steps', 2, '--eval-every', 2], capsys)
    assert r.returncode == 0, str(r)
    text = tmp_path/'new.txt'  # with a character the model never saw
    text.write_text(corpus.read_text(encoding='utf-8').replace('e', '{'), encoding='utf-8')
    r = run_main(['train', text, '--out', tmp_path/'tuned', '--init-from', src, '--batch-size', 4,
                  '--seq-len', 16, '--max-steps', 2, '--eval-every', 2, '--device', 'cpu'], capsys)
    assert r.returncode == 0, str(r)
    tuned, before = load(tmp_path/'tuned'), load(src)
    assert (tuned.cfg.cell, tuned.cfg.context) == ('transformer', 16) and '{' in tuned.vocab.itos
    assert len(tuned.vocab) == len(before.vocab) + 1


@pytest.mark.parametrize('flags, needles', [
    (['--cell', 'transformer', '--hidden', 30, '--heads', 4], ['--heads 4 must divide --hidden 30']),
    (['--cell', 'transformer', '--context', 0], ['--context must be a positive whole number, not 0']),
    (['--cell', 'transformer', '--context', -3], ['--context']),
    (['--cell', 'transformer', '--context', 64], ['--context 64 is longer than the training windows',
                                                  '(--seq-len 16)']),
    (['--cell', 'transformer', '--emb-dim', 8], ['--emb-dim 8', 'leave --emb-dim out']),
    (['--heads', 2], ['--heads sets up a transformer', 'LSTM']),
    (['--cell', 'gru', '--heads', 2, '--context', 16], ['--heads and --context set up a transformer', 'GRU']),
])
def test_bad_settings(flags, needles, corpus, tmp_path, capsys):
    "A setting a Transformer (or an LSTM) cannot take: one line on stderr, exit status 2, no run folder."
    r = run_main(['train', corpus, '--out', tmp_path/'run', '--hidden', 32, '--layers', 1, '--batch-size', 4,
                  '--seq-len', 16, '--max-steps', 2, '--device', 'cpu', *flags], capsys)
    assert_user_error(r, 'train', *needles)
    assert not (tmp_path/'run').exists() or snapshot(tmp_path/'run') == {}


def test_bad_settings_keep_an_existing_run(corpus, tmp_path, capsys):
    "A bad --heads when resuming leaves the run folder as it was."
    run = tmp_path/'run'
    r = run_main(['train', corpus, '--out', run, *TINY_TFM, '--max-steps', 2, '--eval-every', 2], capsys)
    assert r.returncode == 0, str(r)
    before = snapshot(run)
    r = run_main(['train', '--out', run, '--resume', '--heads', 4, '--device', 'cpu'], capsys)
    assert_user_error(r, 'train', '--heads')
    assert snapshot(run) == before


# ------------------------------------------------------------------ the model

def test_checkpoint_round_trip(tmp_path):
    "A saved Transformer loads with the same config and gives identical logits and caches."
    model = small_model()
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn_like(p) * 0.1)  # not the initial weights
    back = load(save(model, tmp_path/'m.safetensors'))
    assert back.config == model.config and back.config['cell'] == 'transformer'
    x = torch.randint(0, 12, (3, 20))
    (a, ha), (b, hb) = model(x), back(x)
    assert torch.equal(a, b)
    assert all(torch.equal(u, v) for u, v in zip(ha, hb))


@pytest.mark.parametrize('context', [1, 5, 8])
def test_stepwise_equals_full_pass(context):
    "One character at a time through the KV cache: the logits of one pass, within and past the context."
    model, x = small_model(context), torch.randint(0, 12, (2, 30))
    full, _ = model(x)
    hidden, steps = None, []
    for i in range(x.shape[1]):
        logits, hidden = model(x[:, i:i + 1], hidden)
        steps.append(logits)
        assert hidden[-1].shape[2] <= context  # the state never holds more than the context
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    keep = context // 2
    for i in range(x.shape[1]):  # each position: a fresh pass over what it may see, its last position
        # within the context: the whole prefix; past it: from where the last slide restarted (`keep` back)
        start = 0 if i < context else context + (i - context) // (context - keep) * (context - keep) - keep
        torch.testing.assert_close(model(x[:, start:i + 1])[0][:, -1], full[:, i], rtol=1e-5, atol=1e-5)


def test_training_carries_no_state():
    "In training each window stands alone: no state comes back; the learner carries nothing across windows."
    model = small_model().train()
    x = torch.randint(0, 12, (2, 8))
    logits, hidden = model(x)
    assert hidden is None and model.init_hidden(2) is None
    assert torch.equal(model(x, None)[0], logits)
    _, cache = model.eval()(x)
    assert [t.shape[1] for t in map_hidden(lambda t: t[:, :1], cache)] == [1] * 5  # the batch: dim 1 of each
