"""Shared fixtures for the command-line tests: a small corpus, a runner for the real `charrnn` console script in a
subprocess with a clean environment, and one tiny trained run folder reused by every test that needs a model.

Tiny Shakespeare comes from the copy that ships inside the package, so the tests need nothing outside the repository.
Every subprocess gets a fresh environment: `CHARRNN_CACHE` and `HOME` in a temporary folder (the user's real cache is
never touched), `OMP_NUM_THREADS=1` (the test machines have two shared cores), and a `sitecustomize` that refuses
every network connection except to 127.0.0.1, so a test that passes proves the command works with no network.
"""
from __future__ import annotations

import gzip, json, os, shutil, subprocess, sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from charrnn.data import CORPORA, CORPORA_DIR

REPO = Path(__file__).resolve().parents[1]
# tiny Shakespeare's bytes, from the gzip copy in the package (charrnn.data checks the same sha256 when it unpacks it)
TINY_SHAKESPEARE_BYTES = gzip.decompress((CORPORA_DIR/CORPORA['tinyshakespeare'].embedded).read_bytes())
BIN = Path(sys.executable).parent
CHARRNN = BIN/'charrnn'

# A model small enough to train in a second or two on one CPU thread.
TINY = ['--hidden', '32', '--layers', '1', '--batch-size', '4', '--seq-len', '16']
# Where a test run folder's first training stops (the resume test continues it to 2×).
TRAIN_STEPS = 10

NO_NETWORK = '''\
"""Loaded by every test subprocess (via PYTHONPATH): only 127.0.0.1 may be reached."""
import socket
_LOCAL = (None, '', 'localhost', '127.0.0.1', '::1')
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
def _check(addr):
    if isinstance(addr, tuple) and addr[0] not in _LOCAL:
        raise OSError(101, f"network access blocked by the charrnn tests ({addr[0]})")
def connect(self, addr): _check(addr); return _connect(self, addr)
def connect_ex(self, addr): _check(addr); return _connect_ex(self, addr)
def getaddrinfo(host, *args, **kwargs):
    if (host.decode() if isinstance(host, bytes) else host) not in _LOCAL:
        raise socket.gaierror(-3, f"name resolution blocked by the charrnn tests ({host})")
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


@dataclass
class Result:
    "What a command did."
    args: list
    returncode: int
    stdout: str
    stderr: str

    def __str__(self):
        return (f"$ {' '.join(map(str, self.args))}\nexit status {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-6000:]}")


def run_main(argv, capsys) -> Result:
    "Run `charrnn.cli.main(argv)` in this process, as a `Result` (exit status, stdout, stderr)."
    import charrnn.cli
    capsys.readouterr()
    try:
        charrnn.cli.main([str(a) for a in argv])
        code = 0
    except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return Result(['charrnn', *argv], code, out, err)


@pytest.fixture(scope='session')
def sandbox(tmp_path_factory) -> Path:
    "A session folder holding the no-network `sitecustomize` and a throwaway HOME."
    d = tmp_path_factory.mktemp('sandbox')
    (d/'pypath').mkdir(); (d/'pypath'/'sitecustomize.py').write_text(NO_NETWORK)
    (d/'home').mkdir()
    return d


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    "An empty charrnn cache folder for one test (`CHARRNN_CACHE`)."
    d = tmp_path/'cache'; d.mkdir()
    return d


@pytest.fixture(scope='session')
def run_cli(sandbox, tmp_path_factory):
    """Run a command in a subprocess with a clean environment and return a `Result`.

    `run_cli('train', 'x.txt', ...)` runs the `charrnn` console script; `module='charrnn'` runs
    `python -m charrnn ...` instead. `env` adds or overrides variables; a value of `None` removes one.
    Unless `env` sets them, `CHARRNN_CACHE` is a fresh empty folder and each downloadable corpus's URL
    (`CHARRNN_SHAKESPEARE_URL`, ...) points at a closed local port, so nothing is ever downloaded by accident."""
    assert CHARRNN.exists(), f"the charrnn console script is not installed next to {sys.executable} (pip install -e .)"
    counter = iter(range(10**6))

    def run(*args, env:dict|None=None, module:str|None=None, exe:list|None=None, cwd=None, timeout:float=180) -> Result:
        base = dict(PATH=f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin", HOME=str(sandbox/'home'),
                    LANG='C.UTF-8', LC_ALL='C.UTF-8', PYTHONPATH=str(sandbox/'pypath'), PYTHONDONTWRITEBYTECODE='1',
                    OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg', COLUMNS='200',
                    CHARRNN_CACHE=str(tmp_path_factory.mktemp(f'cache{next(counter)}')),
                    **{f'CHARRNN_{name.upper()}_URL': f'http://127.0.0.1:9/{c.file}' for name, c in CORPORA.items()})
        for k, v in (env or {}).items():
            if v is None: base.pop(k, None)
            else: base[k] = str(v)
        cmd = exe if exe is not None else [sys.executable, '-m', module] if module else [str(CHARRNN)]
        cmd = [*cmd, *map(str, args)]
        p = subprocess.run(cmd, env=base, cwd=cwd or sandbox, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, errors='replace', timeout=timeout)
        return Result(cmd, p.returncode, p.stdout, p.stderr)
    return run


def shakespeare_prefix(tmp_path_factory, chars:int) -> Path:
    "The first `chars` characters (whole lines) of tiny Shakespeare, as a UTF-8 file."
    text = TINY_SHAKESPEARE_BYTES.decode('utf-8')[:chars]
    p = tmp_path_factory.mktemp('corpus')/f'shakespeare_{chars // 1000}k.txt'
    p.write_text(text[:text.rindex('\n') + 1], encoding='utf-8')
    return p


@pytest.fixture(scope='session')
def corpus(tmp_path_factory) -> Path:
    "The first 20,000 characters (whole lines) of tiny Shakespeare, as a UTF-8 file."
    return shakespeare_prefix(tmp_path_factory, 20_000)


@pytest.fixture(scope='session')
def trained(run_cli, corpus, tmp_path_factory):
    "A tiny run trained once for the session: `(run folder, Result)`. Never modify it: use `run_copy`."
    out = tmp_path_factory.mktemp('trained')/'run'
    r = run_cli('train', corpus, '--out', out, *TINY, '--max-steps', TRAIN_STEPS, '--eval-every', 5, '--seed', 0)
    assert r.returncode == 0, str(r)
    return out, r


@pytest.fixture
def trained_run(trained) -> Path:
    "The session's trained run folder (read-only: tests that write to a run folder use `run_copy`)."
    return trained[0]


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    "A private copy of the session's trained run folder."
    return Path(shutil.copytree(trained[0], tmp_path/'run'))


def snapshot(folder:Path) -> dict:
    "Every file under `folder` (relative name -> bytes)."
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob('*')) if p.is_file()}


def assert_user_error(r:Result, cmd:str, *needles:str):
    "`r` failed as a user error of `charrnn cmd`: status 2, one line on stderr, no traceback; the line names each of `needles`."
    assert r.returncode == 2, f"expected exit status 2\n{r}"
    assert 'Traceback' not in r.stderr + r.stdout, f"a traceback\n{r}"
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}\n{r}"
    prefix = f'charrnn {cmd}: error: '
    assert lines[0].startswith(prefix), f"stderr should start with {prefix!r}\n{r}"
    assert len(lines[0]) > len(prefix) + 10, f"an error with no explanation\n{r}"
    for n in needles:
        assert n.lower() in lines[0].lower(), f"the error should mention {n!r}\n{r}"
    if cmd == 'generate': assert r.stdout == '', f"generate printed to stdout on error\n{r}"
    return lines[0]


def safetensors_header(path:Path) -> dict:
    "The JSON header of a safetensors file (its `__metadata__` values are JSON strings in charrnn's files)."
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], 'little')
    return json.loads(data[8:8 + n])


def checkpoint_summary(path:Path) -> dict:
    "The training summary stored in a charrnn checkpoint's header."
    return json.loads(safetensors_header(path)['__metadata__']['summary'])
