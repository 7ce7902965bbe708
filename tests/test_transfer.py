"""`charrnn train TEXT --init-from CHECKPOINT` (issue 15), run for real through the console script.

A fine-tuning run starts from the bundled Shakespeare model (or any checkpoint) on a text with characters the
model has never seen: the vocabulary grows, the model keeps its shape, every known character keeps its rows,
and before any step the model predicts known text as the bundled one did (loss within 1e-3). The checkpoints
record the source model's sha256 and summary, a resumed fine-tuning run keeps them, and every bad input is one
line on stderr with exit status 2.

The bundled model is 2×384, so the runs are a few steps of tiny batches; one fine-tuned run is shared by the
session. Fixtures (`run_cli`, `assert_user_error`, ...) are in conftest.py.
"""
from __future__ import annotations

import json, shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_user_error, checkpoint_summary, safetensors_header, snapshot
from charrnn.checkpoint import bundled_model, bundled_model_path, load
from charrnn.data import file_sha256, get_corpus
from charrnn.encoding import read_text
from charrnn.run import FINE_TUNE_LR

SMALL = ['--batch-size', '4', '--seq-len', '16', '--precision', 'fp32', '--device', 'cpu']
NEW = '{}[]<>|'  # characters tiny Shakespeare (and so the bundled model) never saw


def sonnets(n:int) -> str:
    "The first `n` characters of the sonnets, without the two characters the bundled model does not know."
    return read_text(get_corpus('sonnets')).replace('(', '').replace(')', '')[:n]


@pytest.fixture(scope='session')
def new_text(tmp_path_factory) -> Path:
    """A text whose training part has characters the bundled model never saw and whose last tenth
    (validation) has none."""
    p = tmp_path_factory.mktemp('text')/'notes.txt'
    lines = sonnets(8_000).splitlines()
    marked = ''.join(f'<{i}> {{x[{i}]}} | ' + line + '\n' for i, line in enumerate(lines))
    p.write_text(marked + sonnets(12_000)[8_000:], encoding='utf-8')
    return p


@pytest.fixture(scope='session')
def finetuned(run_cli, new_text, tmp_path_factory):
    """One fine-tuning run from the bundled model, shared by the session: `(run folder, Result)`.
    Never modify it."""
    out = tmp_path_factory.mktemp('finetuned')/'run'
    r = run_cli('train', new_text, '--out', out, '--init-from', 'bundled', *SMALL,
                '--max-steps', 2, '--eval-every', 2)
    assert r.returncode == 0, str(r)
    return out, r


def text_loss(model, text:str) -> float:
    "The mean cross-entropy of `model` predicting each next character of `text`."
    ids = model.vocab.encode(text).long()[None]
    with torch.no_grad(): logits, _ = model.eval()(ids[:, :-1])
    return F.cross_entropy(logits[0], ids[0, 1:]).item()


# ------------------------------------------------------------------ fine-tuning

def test_finetune_grows_the_vocabulary(finetuned, new_text):
    out, r = finetuned
    source, model = bundled_model(), load(out/'best.safetensors')
    text_chars = set(new_text.read_text(encoding='utf-8'))
    assert set(model.vocab.itos) == set(source.vocab.itos) | text_chars  # every character of both, no more
    assert set(NEW) <= set(model.vocab.itos) and not set(NEW) & set(source.vocab.itos)
    assert model.config == source.config  # the shape comes from the checkpoint: 2×384, embedding 65
    assert f'{len(text_chars - set(source.vocab.itos))} new characters' in r.stdout, r
    assert "'<' (U+003C)" in r.stdout, r


def test_finetune_keeps_known_rows_where_ids_move(finetuned):
    """After 2 steps the rows have moved a little, but each known character's rows are its own,
    not a neighbour's."""
    source, model = bundled_model(), load(finetuned[0]/'best.safetensors')
    moved = [c for c in source.vocab.itos if model.vocab.stoi[c] != source.vocab.stoi[c]]
    assert len(moved) > 40  # '<', '[', '{', ... come before most letters
    for c in source.vocab.itos:
        new, old = model.vocab.stoi[c], source.vocab.stoi[c]
        a, b = model.emb.weight[new], source.emb.weight[old]
        assert (a - b).abs().max() < 1e-3, c  # 2 steps of warm-up move a weight by about 1e-4
        assert (model.fc.weight[new] - source.fc.weight[old]).abs().max() < 1e-3, c


def test_predictions_on_known_text_unchanged(run_cli, new_text, tmp_path):
    """One step at a learning rate of 1e-12 is the model before any step: on known text its loss is the
    bundled model's."""
    out = tmp_path/'run'
    r = run_cli('train', new_text, '--out', out, '--init-from', 'bundled', *SMALL,
                '--max-steps', 1, '--lr', '1e-12')
    assert r.returncode == 0, str(r)
    source, grown = bundled_model(), load(out/'best.safetensors')
    assert len(grown.vocab) > len(source.vocab)
    # text the run did not train on, made only of characters the bundled model knows
    known = sonnets(20_000)[12_000:]
    before, after = text_loss(source, known), text_loss(grown, known)
    assert abs(after - before) < 1e-3, (before, after)


def test_source_model_recorded(finetuned):
    out, _ = finetuned
    src = bundled_model_path()
    want = {k: v for k, v in checkpoint_summary(src).items() if k != 'history'}
    for f in ('best.safetensors', 'latest.safetensors'):
        rec = checkpoint_summary(out/f)['init_from']
        assert rec['sha256'] == file_sha256(src), f
        assert rec['path'] == str(src)
        assert rec['summary'] == want, f
    assert json.loads((out/'history.json').read_text())['summary']['init_from']['sha256'] == file_sha256(src)


def test_init_from_a_checkpoint_file(run_cli, corpus, tmp_path):
    "A checkpoint given by its path (here a copy of the bundled model): its sha256 is the copy's."
    src = Path(shutil.copy(bundled_model_path(), tmp_path/'shakespeare.safetensors'))
    out = tmp_path/'run'
    r = run_cli('train', corpus, '--out', out, '--init-from', src, *SMALL, '--max-steps', 1, '--dropout', 0.3)
    assert r.returncode == 0, str(r)
    s = checkpoint_summary(out/'best.safetensors')
    assert (s['init_from']['path'], s['init_from']['sha256']) == (str(src), file_sha256(src))
    assert 'no new characters' in r.stdout, r
    config = json.loads(safetensors_header(out/'best.safetensors')['__metadata__']['config'])
    assert config['dropout'] == 0.3  # dropout may change
    assert s['train_config']['lr'] == FINE_TUNE_LR  # the fine-tuning default


def test_resume_a_finetuned_run(run_cli, finetuned, new_text, tmp_path):
    """A fine-tuning run continues with --resume alone; it keeps its grown vocabulary and its
    record of the source."""
    out = Path(shutil.copytree(finetuned[0], tmp_path/'run'))
    r = run_cli('train', new_text, '--out', out, '--resume', '--max-steps', 4)
    assert r.returncode == 0, str(r)
    assert 'resuming at step 2' in r.stdout, r
    s = checkpoint_summary(out/'latest.safetensors')
    assert s['step'] == 4 and s['init_from']['sha256'] == file_sha256(bundled_model_path())
    assert load(out/'latest.safetensors').vocab == load(finetuned[0]/'best.safetensors').vocab


def test_help_names_the_fine_tuning_lr(run_cli):
    r = run_cli('train', '--help')
    assert r.returncode == 0
    text = ' '.join(r.stdout.split())
    assert '--init-from' in text and 'bundled' in text
    assert f'--lr defaults to {FINE_TUNE_LR:g}' in text  # the help says what the code does


# ------------------------------------------------------------------ bad input

def damaged(kind:str, d:Path) -> Path:
    "A copy of the bundled model, damaged."
    data = bundled_model_path().read_bytes()
    if kind == 'truncated': data = data[:len(data) // 2]
    if kind == 'corrupt':  # flipped bits in the weights
        data = data[:-1000] + bytes(b ^ 0xff for b in data[-1000:])
    p = d/f'{kind}.safetensors'
    p.write_bytes(data)
    return p

@pytest.mark.parametrize('kind, needles', [('missing', ['missing.safetensors', '--init-from', 'no such']),
                                           ('truncated', ['truncated.safetensors', 'truncated']),
                                           ('corrupt', ['corrupt.safetensors', 'corrupt'])])
def test_bad_checkpoint(run_cli, corpus, tmp_path, kind, needles):
    src = tmp_path/'missing.safetensors' if kind == 'missing' else damaged(kind, tmp_path)
    r = run_cli('train', corpus, '--out', tmp_path/'run', '--init-from', src, *SMALL, '--max-steps', 1)
    assert_user_error(r, 'train', *needles)
    assert not (tmp_path/'run').exists()


def test_init_from_with_resume(run_cli, corpus, finetuned, tmp_path):
    out = Path(shutil.copytree(finetuned[0], tmp_path/'run'))
    before = snapshot(out)
    r = run_cli('train', corpus, '--out', out, '--init-from', 'bundled', '--resume', '--max-steps', 4)
    assert_user_error(r, 'train', '--init-from', '--resume')
    assert snapshot(out) == before


def test_init_from_into_a_used_folder(run_cli, corpus, finetuned, tmp_path):
    out = Path(shutil.copytree(finetuned[0], tmp_path/'run'))
    before = snapshot(out)
    r = run_cli('train', corpus, '--out', out, '--init-from', 'bundled', '--max-steps', 1)
    assert_user_error(r, 'train', 'already holds')
    assert snapshot(out) == before


@pytest.mark.parametrize('flag, value', [('--hidden', 512), ('--layers', 3), ('--cell', 'gru'),
                                         ('--emb-dim', 16)])
def test_conflicting_size(run_cli, corpus, tmp_path, flag, value):
    r = run_cli('train', corpus, '--out', tmp_path/'run', '--init-from', 'bundled', flag, value,
                '--max-steps', 1)
    assert_user_error(r, 'train', f'{flag} {value}', '2×384', f'leave out {flag}')
    assert not (tmp_path/'run').exists()


LATIN1 = 'Caf\xe9 cr\xe8me\n'.encode('latin-1') * 200  # a text that is not UTF-8


@pytest.mark.parametrize('kind, data, needles', [('empty', b'', ['empty']),
                                                 ('latin1', LATIN1, ['not UTF-8'])])
def test_bad_text(run_cli, tmp_path, kind, data, needles):
    text = tmp_path/f'{kind}.txt'
    text.write_bytes(data)
    r = run_cli('train', text, '--out', tmp_path/'run', '--init-from', 'bundled', '--max-steps', 1)
    assert_user_error(r, 'train', text.name, *needles)
    assert not (tmp_path/'run').exists()
