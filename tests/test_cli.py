"""The `charrnn` command (issue 3), through `charrnn.cli.main` in this process, and a few smoke tests of the
real console script.

Bad input: every case in issue 3's list gives exit status 2 and exactly one line on stderr,
`charrnn train: error: ...` or `charrnn generate: error: ...`, with no traceback; `generate` prints nothing
on stdout; and a run folder that already exists keeps every file byte for byte (a failed run never overwrites
or deletes a checkpoint). Happy paths: train -> generate from the checkpoint and from the run folder; seeds;
several samples; min-p; resume; `--help`. The flags are generated from the config dataclasses (issue 10):
every field of `ModelConfig`, `TrainConfig` and `Sampler` has its flag, with the field's comment as its help,
and a flag's value reaches the run. (Downloading a corpus is tested in test_data.py.)

In a real process (conftest's `run_cli`), where that is what is tested: the session's trained run (the console
script end to end), a resume from disk, a fresh process's seeds, the no-network sandbox and the bundled model
in it, `python -m charrnn` and `python -m charrnn.cli`, `--help` and `--version` of the console script.
Everything else runs in this process (conftest's `cli`), which is much faster.

Models are tiny (a 1×32 LSTM, batches of 4×16, a few steps) and one run folder is trained once per session.
"""
from __future__ import annotations

import json, re
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

import pytest

from charrnn.core import flag
from conftest import TINY, TINY_SHAKESPEARE_BYTES, TRAIN_STEPS, assert_user_error, checkpoint_summary
from conftest import safetensors_header, snapshot

SHORT = [*TINY, '--max-steps', '2', '--eval-every', '2']  # a tiny run of 2 steps


def write(path:Path, data:bytes|str) -> Path:
    path.write_bytes(data.encode('utf-8') if isinstance(data, str) else data)
    return path


def checkpoints(folder:Path) -> list:
    return sorted(p.name for p in Path(folder).glob('*.safetensors')) if Path(folder).exists() else []


# ------------------------------------------------------------------ train: bad text

def bad_text(kind:str, d:Path, corpus:Path) -> Path:
    "A text argument that cannot be trained on."
    if kind == 'missing': return d/'no_such_file.txt'
    if kind == 'directory':
        (d/'a_folder').mkdir()
        return d/'a_folder'
    if kind == 'empty': return write(d/'empty.txt', b'')
    if kind == 'binary': return write(d/'model.bin', bytes(range(256)) * 64)
    if kind == 'latin1':
        return write(d/'latin1.txt', 'Caf\xe9 cr\xe8me br\xfbl\xe9e\n'.encode('latin-1') * 200)
    raise ValueError(kind)

BAD_TEXT = {  # kind -> words the one-line error must contain
    'missing': ['no_such_file.txt', 'no such file'],
    'directory': ['a_folder', 'directory'],
    'empty': ['empty.txt', 'empty'],
    'binary': ['model.bin', 'binary'],
    'latin1': ['latin1.txt', 'not UTF-8'],
}

@pytest.mark.parametrize('kind', BAD_TEXT)
def test_train_bad_text(cli, corpus, tmp_path, kind):
    out = tmp_path/'run'
    r = cli('train', bad_text(kind, tmp_path, corpus), '--out', out, *SHORT)
    assert_user_error(r, 'train', *BAD_TEXT[kind])
    assert not checkpoints(out)


def short_text(tmp_path:Path, corpus:Path, n:int) -> Path:
    return write(tmp_path/'short.txt', corpus.read_text()[:n])

def test_train_text_shorter_than_a_batch_explicit_sizes(cli, corpus, tmp_path):
    "The user chose --batch-size and --seq-len: they are kept, and the error says what fits."
    out = tmp_path/'run'
    r = cli('train', short_text(tmp_path, corpus, 1000), '--out', out, '--hidden', 32, '--layers', 1,
                '--batch-size', 64, '--seq-len', 100, '--max-steps', 2)
    line = assert_user_error(r, 'train', 'too few', '64', '100')
    # it says how much text is needed, or which batch size fits: 900 training characters fit 8 streams of 100
    assert re.search(r'at least [\d,]+|at most 8', line), r
    assert not checkpoints(out)

def test_train_text_shorter_than_a_batch_default_sizes(cli, corpus, tmp_path):
    "Sizes left to the recipe shrink to fit a short text, and a note says so."
    out = tmp_path/'run'
    r = cli('train', short_text(tmp_path, corpus, 1000), '--out', out, '--hidden', 32, '--layers', 1,
                '--max-steps', 2, '--eval-every', 2)
    assert r.returncode == 0, r
    assert 'Traceback' not in r.stderr, r
    note = [l for l in (r.stdout + r.stderr).splitlines() if l.lower().startswith('note')]
    assert len(note) == 1 and 'batch size' in note[0] and 'too few' in note[0], r
    assert checkpoints(out) == ['best.safetensors', 'latest.safetensors']
    cfg = checkpoint_summary(out/'latest.safetensors')['train_config']
    assert cfg['batch_size'] * cfg['seq_len'] + 1 <= 900, cfg
    assert f"batch size {cfg['batch_size']}" in note[0], (cfg, note)


# ------------------------------------------------------------------ train: bad settings

BAD_SETTINGS = [  # arguments -> words the error must contain
    (['--hidden', '0'], ['--hidden', '0']),
    (['--layers', '-1'], ['--layers', '-1']),
    (['--lr', '0'], ['lr', '0']),
    (['--lr', '-1'], ['lr', '-1']),
    (['--seq-len', '0'], ['--seq-len', '0']),
    (['--batch-size', '0'], ['--batch-size', '0']),
    (['--dropout', '1.5'], ['dropout', '1.5']),
    (['--max-steps', '0'], ['--max-steps', '0']),
    (['--time-limit', '-5'], ['--time-limit', '-5']),
    (['--hidden', 'big'], ['--hidden', 'big']),   # argparse's own error, in the same one-line form
]

@pytest.mark.parametrize('args,needles', BAD_SETTINGS, ids=[' '.join(a) for a, _ in BAD_SETTINGS])
def test_train_bad_setting(cli, corpus, tmp_path, args, needles):
    out = tmp_path/'run'
    defaults = [*TINY, '--max-steps', '2']
    defaults = [a for i, a in enumerate(defaults) if a != args[0] and (i == 0 or defaults[i-1] != args[0])]
    r = cli('train', corpus, '--out', out, *defaults, *args)
    assert_user_error(r, 'train', *needles)
    assert not checkpoints(out)

def no_cuda() -> bool:
    import torch
    return not torch.cuda.is_available()

def test_cuda_where_there_is_none(cli, corpus, tmp_path):
    if not no_cuda(): pytest.skip('this machine has a CUDA GPU')
    r = cli('train', corpus, '--out', tmp_path/'run', *SHORT, '--device', 'cuda')
    assert_user_error(r, 'train', 'cuda', 'cpu')
    assert not checkpoints(tmp_path/'run')


# ------------------------------------------------------------------ train: the run folder

def test_out_is_a_file(cli, corpus, tmp_path):
    f = write(tmp_path/'notes.txt', 'my notes\n')
    assert_user_error(cli('train', corpus, '--out', f, *SHORT), 'train', 'notes.txt', 'file')
    assert f.read_text() == 'my notes\n'

def test_resume_with_nothing_to_resume(cli, corpus, tmp_path):
    empty = tmp_path/'empty_run'
    empty.mkdir()
    r = cli('train', corpus, '--out', empty, *SHORT, '--resume')
    assert_user_error(r, 'train', 'nothing to resume', 'empty_run')
    assert list(empty.iterdir()) == []

def test_out_holds_a_run_without_resume(cli, corpus, run_copy):
    before = snapshot(run_copy)
    assert_user_error(cli('train', corpus, '--out', run_copy, *SHORT), 'train', '--resume')
    assert snapshot(run_copy) == before

def other_corpus(tmp_path:Path) -> Path:
    return write(tmp_path/'other.txt', 'zzz ZZZ 0123456789 ~~~ @@@ ### $$$\n' * 200)

FAILED_RESUMES = {  # a bad --resume of an existing run: the error, and the run folder untouched
    'other text': lambda d, corpus: [other_corpus(d)],
    'other model': lambda d, corpus: [corpus, '--hidden', '48'],
}

@pytest.mark.parametrize('case', FAILED_RESUMES)
def test_failed_resume_leaves_the_run_alone(cli, corpus, run_copy, tmp_path, case):
    before = snapshot(run_copy)
    text, *args = FAILED_RESUMES[case](tmp_path, corpus)
    r = cli('train', text, '--out', run_copy, '--resume', '--max-steps', 2 * TRAIN_STEPS, *args)
    assert_user_error(r, 'train')
    assert snapshot(run_copy) == before


# ------------------------------------------------------------------ train: happy paths

def test_train_writes_a_run_folder(trained):
    out, r = trained
    files = {'best.safetensors', 'latest.safetensors', 'history.json', 'loss.png'}
    assert files <= {p.name for p in out.iterdir()}
    assert (out/'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    hist = json.loads((out/'history.json').read_text())
    # --eval-every 5 over 10 steps: validations at steps 5 and 10, each printed in nats and bits/char
    assert [e['step'] for e in hist['evals']] == [5, 10], hist['evals']
    val_lines = [l for l in r.stdout.splitlines() if l.startswith('step') and 'val' in l and 'bits/char' in l]
    assert len(val_lines) == 2, r
    last = r.stdout.strip().splitlines()[-1]
    best = min(e['val_loss'] for e in hist['evals'])
    assert str(out/'best.safetensors') in last and f'{best:.4f}' in last and 'bits/char' in last, r
    assert checkpoint_summary(out/'latest.safetensors')['step'] == TRAIN_STEPS

def test_resume_continues_from_the_saved_step(run_cli, corpus, run_copy):
    from safetensors.numpy import load_file
    first = load_file(str(run_copy/'latest.safetensors'))['state.train_loss']
    first_evals = json.loads((run_copy/'history.json').read_text())['evals']
    assert len(first) == TRAIN_STEPS
    r = run_cli('train', corpus, '--out', run_copy, '--resume', '--max-steps', 2 * TRAIN_STEPS)
    assert r.returncode == 0, r
    assert f'resuming at step {TRAIN_STEPS}' in r.stdout, r
    hist = json.loads((run_copy/'history.json').read_text())
    assert hist['summary']['step'] == 2 * TRAIN_STEPS
    assert hist['evals'][:len(first_evals)] == first_evals and hist['evals'][-1]['step'] == 2 * TRAIN_STEPS
    assert checkpoint_summary(run_copy/'latest.safetensors')['step'] == 2 * TRAIN_STEPS
    losses = load_file(str(run_copy/'latest.safetensors'))['state.train_loss']
    assert len(losses) == 2 * TRAIN_STEPS and (losses[:TRAIN_STEPS] == first).all()
    # with no size flags, the resumed run keeps the run's own settings (not the device's recipe)
    assert checkpoint_summary(run_copy/'latest.safetensors')['train_config']['batch_size'] == 4


# ------------------------------------------------------------------ generate: bad input

BAD_SAMPLING = [
    (['--length', '-1'], ['length', '-1']),
    (['--num-samples', '0'], ['samples', '0']),
    (['--top-p', '0'], ['top-p', '0']),
    (['--top-p', '1.5'], ['top-p', '1.5']),
    (['--temperature', '-0.5'], ['temperature', '-0.5']),
    (['--device', 'tpu'], ['tpu']),
]

@pytest.mark.parametrize('args,needles', BAD_SAMPLING, ids=[' '.join(a) for a, _ in BAD_SAMPLING])
def test_generate_bad_setting(cli, trained_run, args, needles):
    before = snapshot(trained_run)
    assert_user_error(cli('generate', trained_run, '--length', 20, *args), 'generate', *needles)
    assert snapshot(trained_run) == before

def test_generate_prime_with_unseen_characters(cli, trained_run):
    before = snapshot(trained_run)
    r = cli('generate', trained_run, '--prime', 'ROMEO: \u2603 costs 5\u20ac', '--length', 20)
    assert_user_error(r, 'generate', 'U+2603', 'U+20AC', 'prime')
    assert snapshot(trained_run) == before


def version_bumped(src:Path, dest:Path) -> Path:
    "A copy of checkpoint `src` whose header says it is format version 999."
    data = src.read_bytes()
    n = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + n])
    assert header['__metadata__']['format_version'] == '1'
    header['__metadata__']['format_version'] = '999'
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    return write(dest, len(h).to_bytes(8, 'little') + h + data[8 + n:])

def bad_checkpoint(kind:str, d:Path, run:Path) -> Path:
    best = (run/'best.safetensors').read_bytes()
    if kind == 'missing': return d/'gone.safetensors'
    if kind == 'truncated': return write(d/'cut.safetensors', best[:len(best) // 2])
    if kind == 'corrupt':
        data = bytearray(best)
        data[-100] ^= 0xFF
        return write(d/'flipped.safetensors', bytes(data))
    if kind == 'text': return write(d/'notes.txt', 'ROMEO: these are not weights\n' * 20)
    if kind == 'pickle':
        import torch
        torch.save({'weights': torch.zeros(3, 3)}, d/'model.pt')
        return d/'model.pt'
    if kind == 'version': return version_bumped(run/'best.safetensors', d/'future.safetensors')
    raise ValueError(kind)

BAD_CHECKPOINTS = {
    'missing': ['gone.safetensors', 'no such'],
    'truncated': ['cut.safetensors', 'truncated'],
    'corrupt': ['flipped.safetensors', 'corrupt'],
    'text': ['notes.txt', 'not a charrnn checkpoint'],
    'pickle': ['model.pt', 'pickle'],
    'version': ['future.safetensors', 'version 999'],
}

@pytest.mark.parametrize('kind', BAD_CHECKPOINTS)
def test_generate_bad_checkpoint(cli, trained_run, tmp_path, kind):
    path = bad_checkpoint(kind, tmp_path, trained_run)
    before = path.read_bytes() if path.is_file() else None
    assert_user_error(cli('generate', path, '--length', 20, '--seed', 1), 'generate', *BAD_CHECKPOINTS[kind])
    if before is not None: assert path.read_bytes() == before


# ------------------------------------------------------------------ generate: happy paths

def test_generate_from_checkpoint_and_folder_with_seeds(run_cli, trained_run):
    L, prime = 200, 'ROMEO:'
    a = run_cli('generate', trained_run/'best.safetensors', '--prime', prime, '--length', L, '--seed', 1)
    assert a.returncode == 0 and 'Traceback' not in a.stderr, a
    assert a.stdout.startswith(prime) and a.stdout.endswith('\n') and len(a.stdout) == len(prime) + L + 1, a
    # the same seed in another process gives the same text (and a run folder means its best.safetensors)
    folder = run_cli('generate', trained_run, '--prime', prime, '--length', L, '--seed', 1)
    assert folder.returncode == 0 and folder.stdout == a.stdout, folder
    other = run_cli('generate', trained_run/'best.safetensors', '--prime', prime, '--length', L, '--seed', 2)
    assert other.returncode == 0 and other.stdout != a.stdout and len(other.stdout) == len(a.stdout), other

def test_generate_num_samples(cli, trained_run):
    L, prime = 60, 'ROMEO:'
    r = cli('generate', trained_run, '--prime', prime, '--length', L, '--num-samples', 3, '--seed', 4)
    assert r.returncode == 0, r
    n = len(prime) + L
    assert len(r.stdout) == 3 * n + 2 * 2 + 1, r  # three samples, separated by blank lines
    samples = [r.stdout[i * (n + 2): i * (n + 2) + n] for i in range(3)]
    assert all(s.startswith(prime) for s in samples), samples
    assert r.stdout[n:n + 2] == r.stdout[2 * n + 2:2 * n + 4] == '\n\n', r
    assert len(set(samples)) == 3, 'independent samples should differ'

def test_the_tests_have_no_network(run_cli):
    code = "import urllib.request; urllib.request.urlopen('http://example.com', timeout=5)"
    r = run_cli(exe=['python', '-c', code])
    assert r.returncode != 0 and 'blocked by the charrnn tests' in r.stderr, r

def test_generate_with_the_bundled_model_offline(run_cli):
    r = run_cli('generate', '--prime', 'ROMEO:', '--seed', 1, '--length', 300)
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r
    assert r.stdout.startswith('ROMEO:') and len(r.stdout) == len('ROMEO:') + 300 + 1, r
    assert len(set(r.stdout)) > 15, 'that is not text'


@pytest.fixture(scope='module')
def console_reference(run_cli, trained):
    "A generate command and what the console script prints for it, to compare the module entry points with."
    good = ['generate', trained[0], '--length', 80, '--seed', 5]
    return good, run_cli(*good)

def test_generate_without_prime_prints_only_new_text(console_reference):
    _, ref = console_reference
    assert ref.returncode == 0 and len(ref.stdout) == 80 + 1, ref

@pytest.mark.parametrize('module', ['charrnn', 'charrnn.cli'])
def test_python_dash_m(run_cli, console_reference, trained_run, module):
    good, ref = console_reference
    r = run_cli(*good, module=module)
    assert (r.returncode, r.stdout, r.stderr) == (ref.returncode, ref.stdout, ref.stderr), r
    assert_user_error(run_cli('generate', trained_run, '--top-p', '0', module=module), 'generate', 'top-p')


HELP = {
    'train': {'--out': 'the run', '--hidden': 'units per recurrent layer',
              '--seq-len': 'characters per window', '--batch-size': 'streams per batch',
              '--max-steps': 'stop after this many steps', '--time-limit': 'seconds',
              '--eval-every': 'steps between validations', '--val-frac': 'held out', '--device': 'cuda:N',
              '--resume': 'latest checkpoint', '--lr': 'learning rate', '--dropout': 'dropout'},
    'generate': {'--prime': 'text to continue', '--length': 'characters to generate',
                 '--top-k': 'most likely', '--top-p': 'probability', '--num-samples': 'independent samples',
                 '--temperature': 'greedy', '--seed': 'same text', '--min-p': 'as likely',
                 '--prime-file': 'newlines'},
    'evaluate': {'CHECKPOINT': "'bundled'", 'TEXT': 'text file to score', '--ngram': 'Kneser-Ney',
                 '--train-text': 'fit', '--device': 'cuda:N'},
}

@pytest.mark.parametrize('cmd', HELP)
def test_help(cli, cmd):
    r = cli(cmd, '--help')
    assert r.returncode == 0 and r.stdout.startswith(f'usage: charrnn {cmd}'), r
    text = ' '.join(r.stdout.split())
    for flag, words in HELP[cmd].items():
        assert re.search(rf'{re.escape(flag)}\b', text), f'{flag} missing from --help\n{r.stdout}'
        assert words in text, f'the help text of {flag} ({words!r}) is missing\n{r.stdout}'
    assert not re.findall(r'--\w+_\w+', r.stdout), f'flags must be hyphenated\n{r.stdout}'


def help_of(text:str, option:str) -> str:
    "The help of `option` in a --help text, on one line."
    lines = text.splitlines()
    i = next((i for i, l in enumerate(lines) if re.match(rf'\s+{re.escape(option)}(\s|,|$)', l)), None)
    assert i is not None, f'{option} missing from\n{text}'
    block = [lines[i]]
    for l in lines[i + 1:]:
        if not l.strip() or re.match(r'\s+-', l) or not l.startswith(' '): break
        block.append(l)
    return ' '.join(' '.join(block).split())

def config_classes(cmd:str) -> tuple:
    from charrnn.model import ModelConfig
    from charrnn.training import TrainConfig
    from charrnn.generation import Sampler
    return {'train': (ModelConfig, TrainConfig), 'generate': (Sampler,)}[cmd]

@pytest.mark.parametrize('cmd', ['train', 'generate'])
def test_every_config_field_has_a_flag(cli, cmd):
    "The flags come from the config dataclasses: every field has its flag, whose help is the field's comment."
    from fastcore.docments import docments
    r = cli(cmd, '--help')
    assert r.returncode == 0, r
    for cls in config_classes(cmd):
        comments = docments(cls)
        for f in fields(cls):
            comment = ' '.join((comments[f.name] or '').split())
            assert comment, f'{cls.__name__}.{f.name} has no comment: it is the help of {flag(f.name)}'
            help_text = help_of(r.stdout, flag(f.name))
            assert comment in help_text, f"{flag(f.name)}'s help is not {comment!r}\n{r.stdout}"

def shown(v) -> str: return f'{v:g}' if isinstance(v, float) else str(v)

def test_help_shows_the_real_defaults(cli):
    "Settings the device's recipe chooses show its values (issue 10: not the field's); others their field's."
    from fastcore.docments import docments
    from charrnn.run import RECIPES
    cpu, gpu = ({k: v for part in RECIPES[d].values() for k, v in part.items()} for d in ('cpu', 'cuda'))
    for cmd in ('train', 'generate'):
        text = cli(cmd, '--help').stdout
        for cls in config_classes(cmd):
            comments = docments(cls)
            for f in fields(cls):
                if cmd == 'train' and (f.name in cpu or f.name in gpu):  # a recipe without it: the default
                    want = (f"default: the device's recipe: {shown(cpu.get(f.name, f.default))} on a CPU, "
                            f"{shown(gpu.get(f.name, f.default))} on a GPU")
                elif f.default is None or isinstance(f.default, bool): continue
                elif 'default' in (comments[f.name] or ''): continue
                else: want = f'(default: {shown(f.default)})'
                help_text = help_of(text, flag(f.name))
                assert want in help_text, f'{flag(f.name)} should show {want!r}:\n{help_text}'

def test_flags_reach_the_run(cli, corpus, tmp_path):
    "Flags that no other test sets arrive in the run's saved settings under their field's name."
    given = dict(cell='gru', emb_dim=8, schedule='constant', warmup=3, final_lr_frac=0.2, weight_decay=0.01,
                 grad_clip=1.5, log_every=1, checkpoint_every=1, val_frac=0.2, precision='fp32')
    out = tmp_path/'run'
    r = cli('train', corpus, '--out', out, *SHORT, *[a for k, v in given.items() for a in (flag(k), v)])
    assert r.returncode == 0, r
    meta = safetensors_header(out/'latest.safetensors')['__metadata__']
    saved = {**json.loads(meta['config']), **checkpoint_summary(out/'latest.safetensors')['train_config']}
    assert {k: saved[k] for k in given} == given, saved

def test_generate_min_p(cli, trained_run):
    "--min-p comes from Sampler's field alone; --min-p 1 keeps only the likeliest character: seeds are moot."
    args = ['generate', trained_run, '--prime', 'ROMEO:', '--length', 60]
    a, b = (cli(*args, '--min-p', 1, '--seed', s) for s in (1, 2))
    assert a.returncode == 0 and a.stdout == b.stdout and len(a.stdout) == len('ROMEO:') + 60 + 1, (a, b)
    assert a.stdout == cli(*args, '--temperature', 0).stdout, 'min-p 1 is greedy decoding'


def test_no_command(cli):
    r = cli()
    assert r.returncode == 2 and r.stdout == '', r
    for usage in ('usage: charrnn train', 'charrnn generate', 'charrnn evaluate CHECKPOINT TEXT',
                  'charrnn compress CHECKPOINT FILE OUT', 'charrnn decompress CHECKPOINT OUT FILE'):
        assert usage in r.stderr, r

def test_top_level_help_and_version(run_cli):
    r = run_cli('--help')
    assert r.returncode == 0 and 'usage: charrnn train' in r.stdout and r.stderr == '', r
    import charrnn
    v = run_cli('--version')
    assert v.returncode == 0 and v.stdout == f'charrnn {charrnn.__version__}\n', v

def test_unknown_command(cli):
    r = cli('trian', 'notes.txt')
    assert r.returncode == 2 and r.stdout == '' and 'Traceback' not in r.stderr, r
    assert r.stderr.splitlines() == ["charrnn: error: unknown command 'trian'; use 'charrnn train', "
                                     "'charrnn generate', 'charrnn evaluate', 'charrnn compress' or "
                                     "'charrnn decompress'"], r

def test_train_needs_out(cli, corpus):
    assert_user_error(cli('train', corpus, *SHORT), 'train', '--out', 'required')

@pytest.mark.parametrize('bad', ['--hiden', '--seq_len'])
def test_unknown_flag(cli, corpus, tmp_path, bad):
    "A misspelt flag, or a setting spelt with '_' (its flag has '-'), is an error, not a silent default."
    assert_user_error(cli('train', corpus, '--out', tmp_path/'run', *SHORT, bad, 32), 'train', bad)
    assert not checkpoints(tmp_path/'run')


# ------------------------------------------------------------------ evaluate (issue 11)

EVAL_LINE = re.compile(r'model: ([\d.]+) nats/char, ([\d.]+) bits/char over ([\d,]+) characters of (.+)')
NGRAM_LINE = re.compile(r'(\d+)-gram: ([\d.]+) nats/char, ([\d.]+) bits/char '
                        r'\(interpolated Kneser-Ney, fitted on (.+): ([\d,]+) characters\)')

class Evaluated(NamedTuple):
    "What `charrnn evaluate` printed: its first line's numbers, and the n-gram line's match (or None)."
    nats: float
    bits: float
    chars: int
    ngram: re.Match|None

def parse_evaluate(r) -> Evaluated:
    "What `charrnn evaluate` printed, read back."
    assert r.returncode == 0 and r.stderr == '', r
    lines = r.stdout.splitlines()
    m = EVAL_LINE.fullmatch(lines[0])
    assert m, r
    ngram = NGRAM_LINE.fullmatch(lines[1]) if len(lines) > 1 else None
    assert len(lines) == (2 if ngram else 1), r
    return Evaluated(float(m[1]), float(m[2]), int(m[3].replace(',', '')), ngram)

def ngram_bits(order:int, train:str, text:str) -> float:
    "What `--ngram` should print: `charrnn.ngram.NGramLM` fitted on `train`, over both texts' characters."
    from charrnn.encoding import Vocab
    from charrnn.ngram import NGramLM
    vocab = Vocab(set(train) | set(text))
    return NGramLM(order, len(vocab)).fit(vocab.encode(train)).bits_per_char(vocab.encode(text))

def tiny_shakespeare_split(val_frac:float=0.1) -> tuple[str, str]:
    "Tiny Shakespeare's training and validation text, cut as training cuts it (`split_data`)."
    text = TINY_SHAKESPEARE_BYTES.decode('utf-8')
    n_val = round(len(text) * val_frac)
    return text[:len(text) - n_val], text[len(text) - n_val:]

def test_evaluate_reproduces_the_bundled_models_validation_loss(cli, tmp_path):
    """On tiny Shakespeare's validation split, `charrnn evaluate bundled` gives the validation loss the
    model's training recorded (within 0.01 nats; the cut into streams is validation's, so it is within 1e-3),
    over every character but the first; `--ngram 5` beside it is fitted on the recorded corpus's training
    split (the first 90%) and is worse."""
    import math
    from charrnn.checkpoint import bundled_model_path
    train, val = tiny_shakespeare_split()
    path = write(tmp_path/'val.txt', val)
    r = cli('evaluate', 'bundled', path, '--ngram', 5)
    e = parse_evaluate(r)
    recorded = checkpoint_summary(bundled_model_path())['val_loss']
    assert abs(e.nats - recorded) < 1e-3, (e.nats, recorded)
    assert e.chars == len(val) - 1 == 111_538 and abs(e.bits - e.nats / math.log(2)) < 1e-4, r
    assert e.ngram and e.ngram[1] == '5' and 'the first 90% of' in e.ngram[4], r
    assert int(e.ngram[5].replace(',', '')) == len(train), r
    assert abs(float(e.ngram[3]) - ngram_bits(5, train, val)) < 1e-4 and float(e.ngram[3]) > e.bits, r

def test_evaluate_a_run_folder_and_a_checkpoint(cli, trained_run, corpus, tmp_path):
    """A run folder means its best checkpoint; the text may be any file of the model's characters; --ngram
    fits on the run's corpus file."""
    text = write(tmp_path/'lines.txt', corpus.read_text()[-3000:])
    folder = cli('evaluate', trained_run, text, '--ngram', 3)
    file = cli('evaluate', trained_run/'best.safetensors', text, '--ngram', 3)
    assert folder.stdout == file.stdout, (folder, file)
    e = parse_evaluate(folder)
    # a 10-step model: between a good model and a uniform guess (ln 65)
    assert e.chars == 2999 and 1.0 < e.nats < 5.0, folder
    train = corpus.read_text()[:len(corpus.read_text()) - round(len(corpus.read_text()) * 0.1)]
    assert e.ngram and str(corpus) in e.ngram[4] and int(e.ngram[5].replace(',', '')) == len(train), folder
    assert abs(float(e.ngram[3]) - ngram_bits(3, train, text.read_text())) < 1e-4, folder

def test_evaluate_ngram_train_text(cli, trained_run, corpus, tmp_path):
    "--train-text replaces the recorded corpus, and may hold characters the model does not know."
    text = write(tmp_path/'lines.txt', corpus.read_text()[-2000:])
    other = write(tmp_path/'other.txt', corpus.read_text()[:5000] + 'Caf\u00e9 \u2603\n')
    r = cli('evaluate', trained_run, text, '--ngram', 2, '--train-text', other)
    ngram = parse_evaluate(r).ngram
    assert ngram and ngram[4] == str(other) and int(ngram[5].replace(',', '')) == len(other.read_text()), r
    assert abs(float(ngram[3]) - ngram_bits(2, other.read_text(), text.read_text())) < 1e-4, r

def with_corpus(src:Path, dest:Path, corpus:dict|None) -> Path:
    "A copy of checkpoint `src` whose summary records `corpus` as its training text (None: no corpus at all)."
    from charrnn.checkpoint import read_checkpoint, write_checkpoint
    ck = read_checkpoint(src)
    summary = {k: v for k, v in ck.meta['summary'].items() if k != 'corpus'}
    ck.meta['summary'] = summary | ({'corpus': corpus} if corpus else {})
    write_checkpoint(dest, ck.tensors, ck.meta)
    return dest

@pytest.mark.parametrize('case', ['moved', 'changed', 'unrecorded'])
def test_evaluate_ngram_without_the_training_text(cli, trained_run, corpus, tmp_path, case):
    """When the recorded corpus is gone or changed (or not recorded), --ngram says so and names --train-text,
    before scoring."""
    recorded = checkpoint_summary(trained_run/'best.safetensors')['corpus']
    gone = tmp_path/'moved_corpus.txt'
    if case == 'changed': write(gone, corpus.read_text().replace('e', 'E'))
    info = None if case == 'unrecorded' else recorded | {'path': str(gone)}
    ckpt = with_corpus(trained_run/'best.safetensors', tmp_path/'model.safetensors', info)
    text = write(tmp_path/'lines.txt', corpus.read_text()[-500:])
    assert parse_evaluate(cli('evaluate', ckpt, text))[2] == 499  # without --ngram the checkpoint is fine
    r = cli('evaluate', ckpt, text, '--ngram', 3)
    assert_user_error(r, 'evaluate', '--train-text', *(['moved_corpus.txt'] if info else ['does not record']))
    assert r.stdout == '', r

def test_evaluate_unknown_characters(cli, tmp_path):
    text = write(tmp_path/'snow.txt', 'ROMEO: a \u2603 costs 5\u20ac\n')
    r = cli('evaluate', 'bundled', text)
    assert_user_error(r, 'evaluate', 'snow.txt', 'U+2603', 'U+20AC', 'never saw')
    assert r.stdout == '', r

# arguments after `charrnn evaluate` (TEXT: a good text) -> words of the error
BAD_EVALUATE = {
    'one character': (['bundled', 'one.txt'], ['one.txt', 'single character']),
    'ngram 0': (['bundled', 'TEXT', '--ngram', '0'], ['--ngram', '0']),
    'ngram -2': (['bundled', 'TEXT', '--ngram', '-2'], ['--ngram', '-2']),
    'ngram two': (['bundled', 'TEXT', '--ngram', 'two'], ['--ngram', 'two']),
    'train-text alone': (['bundled', 'TEXT', '--train-text', 'TEXT'], ['--train-text', '--ngram']),
    'train-text missing': (['bundled', 'TEXT', '--ngram', '2', '--train-text', 'gone.txt'],
                           ['gone.txt', 'no such file']),
    'train-text empty': (['bundled', 'TEXT', '--ngram', '2', '--train-text', 'empty.txt'],
                         ['empty.txt', 'empty']),
    'no text': (['bundled'], ['TEXT']),
    'no arguments': ([], ['CHECKPOINT', 'TEXT']),
    'unknown flag': (['bundled', 'TEXT', '--n-gram', '3'], ['--n-gram']),
}

@pytest.mark.parametrize('case', BAD_EVALUATE)
def test_evaluate_bad_input(cli, trained_run, corpus, tmp_path, case):
    args, needles = BAD_EVALUATE[case]
    files = {'TEXT': write(tmp_path/'text.txt', corpus.read_text()[:2000]),
             'one.txt': write(tmp_path/'one.txt', 'A'),
             'empty.txt': write(tmp_path/'empty.txt', b''), 'gone.txt': tmp_path/'gone.txt'}
    r = cli('evaluate', *[files.get(a, a) for a in args])
    assert_user_error(r, 'evaluate', *needles)
    assert r.stdout == '', r

@pytest.mark.parametrize('kind', BAD_TEXT)
def test_evaluate_bad_text(cli, corpus, tmp_path, kind):
    r = cli('evaluate', 'bundled', bad_text(kind, tmp_path, corpus))
    assert_user_error(r, 'evaluate', *BAD_TEXT[kind])
    assert r.stdout == '', r

@pytest.mark.parametrize('kind', BAD_CHECKPOINTS)
def test_evaluate_bad_checkpoint(cli, trained_run, corpus, tmp_path, kind):
    path = bad_checkpoint(kind, tmp_path, trained_run)
    before = path.read_bytes() if path.is_file() else None
    r = cli('evaluate', path, corpus)
    assert_user_error(r, 'evaluate', *BAD_CHECKPOINTS[kind])
    assert r.stdout == '', r
    if before is not None: assert path.read_bytes() == before


# ------------------------------------------------------------------ generate --prime-file (issue 15)

PRIME = 'ROMEO:\nWhat light is this, that in the window shines?\n\nJULIET:\nIt is the east,'

def test_generate_prime_file_is_the_same_as_prime(cli, trained_run, tmp_path):
    "A multi-line prime read from a file (CRLF line ends too) gives what the prime typed with --prime gives."
    args = ['generate', trained_run, '--length', 80, '--seed', 7]
    typed = cli(*args, '--prime', PRIME)
    assert typed.returncode == 0 and typed.stdout.startswith(PRIME), typed
    assert len(typed.stdout) == len(PRIME) + 80 + 1, typed
    crlf = PRIME.replace('\n', '\r\n').encode()
    for name, data in [('prime.txt', PRIME.encode()), ('prime_crlf.txt', crlf)]:
        r = cli(*args, '--prime-file', write(tmp_path/name, data))
        assert (r.returncode, r.stdout, r.stderr) == (0, typed.stdout, ''), r

def test_generate_prime_and_prime_file(cli, trained_run, tmp_path):
    r = cli('generate', trained_run, '--prime', 'ROMEO:', '--prime-file', write(tmp_path/'prime.txt', PRIME))
    assert_user_error(r, 'generate', '--prime', '--prime-file', 'not both')

def test_generate_prime_file_unknown_characters(cli, trained_run, tmp_path):
    prime = write(tmp_path/'prime.txt', 'ROMEO:\n\u2603 costs 5\u20ac\n')
    r = cli('generate', trained_run, '--prime-file', prime, '--length', 20)
    assert_user_error(r, 'generate', 'U+2603', 'U+20AC', 'prime')

@pytest.mark.parametrize('kind', ['missing', 'empty', 'latin1'])  # read_text's other cases are the same code
def test_generate_bad_prime_file(cli, trained_run, corpus, tmp_path, kind):
    r = cli('generate', trained_run, '--prime-file', bad_text(kind, tmp_path, corpus))
    assert_user_error(r, 'generate', *BAD_TEXT[kind])

def test_generate_bundled_by_name(cli):
    "CHECKPOINT 'bundled' is the model generate uses with no CHECKPOINT (as for evaluate, train --init-from)."
    a, b = (cli('generate', *c, '--prime', 'ROMEO:', '--length', 40, '--seed', 2) for c in (['bundled'], []))
    assert a.returncode == 0 and a.stdout == b.stdout and len(a.stdout) == len('ROMEO:') + 40 + 1, (a, b)

def test_norm_trains_saves_and_generates(cli, corpus, tmp_path):
    "--norm reaches the checkpoint, and both decoders generate from the model; --no-norm turns it off."
    out = tmp_path/'normed'
    r = cli('train', corpus, '--out', out, *SHORT, '--norm')
    assert r.returncode == 0, r
    config = json.loads(safetensors_header(out/'best.safetensors')['__metadata__']['config'])
    assert config['norm'] is True, config
    for weights in ('fp32', 'int8'):
        g = cli('generate', out, '--prime', 'ROMEO:', '--length', 40, '--seed', 1, '--weights', weights)
        assert g.returncode == 0 and len(g.stdout) == len('ROMEO:') + 40 + 1, g
    plain = tmp_path/'plain'
    assert cli('train', corpus, '--out', plain, *SHORT, '--no-norm').returncode == 0
    assert 'norm' not in json.loads(safetensors_header(plain/'best.safetensors')['__metadata__']['config'])
    r = cli('train', corpus, '--out', tmp_path/'ft', *SHORT, '--init-from', plain, '--norm')
    assert_user_error(r, 'train', 'a fine-tuned model keeps its shape', 'leave out --norm')
