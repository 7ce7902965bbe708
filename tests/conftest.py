"""The test harness: one way to run a `charrnn` command, one tiny model, one result type, one check of a
user error.

- `cli('train', path, '--out', out, *TINY)` runs `charrnn.cli.main` in this process (no Python start-up, no
  torch import: fast) and returns a `Result`; `run_cli(...)`, with the same arguments, runs the real `charrnn`
  console script in a subprocess, for the few tests where a real process matters (the entry points, signals,
  a fresh process's seeds, the no-network sandbox). Both give each call an empty `CHARRNN_CACHE` and point
  every downloadable corpus at a closed local port, so nothing is downloaded by accident and the user's real
  cache is never touched.
- `TINY`: a model small enough to train in a second or two on one CPU thread.
- `assert_user_error(result, cmd, *words)`: exit status 2, one line on stderr, no traceback, naming each word.

Tiny Shakespeare comes from the copy that ships inside the package, so the tests need nothing outside the
repository. A subprocess gets a fresh environment: `HOME` in a temporary folder, `OMP_NUM_THREADS=1` (the test
machines have two shared cores), and a `sitecustomize` that refuses every network connection except to
127.0.0.1, so a test that passes proves the command works with no network.

Thread policy (the tests', not the library's): one torch thread in this process and in every process it
starts, unless `OMP_NUM_THREADS` is set already.
"""
from __future__ import annotations

import os
os.environ.setdefault('OMP_NUM_THREADS', '1')  # before torch is imported (charrnn imports it)

import contextlib, gzip, io, json, shutil, subprocess, sys, traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from charrnn.data import CORPORA, CORPORA_DIR

REPO = Path(__file__).resolve().parents[1]
# tiny Shakespeare's bytes, from the package's gzip copy (charrnn.data checks its sha256 when it unpacks it)
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
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo
def _check(addr):
    if isinstance(addr, tuple) and addr[0] not in _LOCAL:
        raise OSError(101, f"network access blocked by the charrnn tests ({addr[0]})")
def connect(self, addr):
    _check(addr)
    return _connect(self, addr)
def connect_ex(self, addr):
    _check(addr)
    return _connect_ex(self, addr)
def getaddrinfo(host, *args, **kwargs):
    if (host.decode() if isinstance(host, bytes) else host) not in _LOCAL:
        raise socket.gaierror(-3, f"name resolution blocked by the charrnn tests ({host})")
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
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


def exit_status(e:SystemExit) -> int:
    "The exit status a process would have after `e`."
    if e.code is None: return 0
    return e.code if isinstance(e.code, int) else 1


def charrnn_env(cache:Path) -> dict:
    "The `charrnn` settings every test command runs with: an empty cache, and no corpus that downloads."
    urls = {f'CHARRNN_{name.upper()}_URL': f'http://127.0.0.1:9/{c.file}' for name, c in CORPORA.items()}
    return dict(CHARRNN_CACHE=str(cache), COLUMNS='200', **urls)


@contextlib.contextmanager
def environ(changes:dict):
    "`os.environ` with `changes` applied (a value of None removes a variable), restored afterwards."
    old = dict(os.environ)
    for k, v in changes.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = str(v)
    try: yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def main_in_process(argv:list, env:dict|None=None) -> Result:
    "`charrnn.cli.main(argv)` in this process, with `env` set around it, as a `Result` (0 when it returns)."
    import charrnn.cli
    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with environ(env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: charrnn.cli.main(argv)
        except SystemExit as e: code = exit_status(e)
        except Exception:  # as a process would end: status 1 and the traceback on stderr
            traceback.print_exc()
            code = 1
    return Result(['charrnn', *argv], code, out.getvalue(), err.getvalue())


def run_main(argv, capsys=None) -> Result:
    "`charrnn.cli.main(argv)` here, in the environment as it is (`capsys`: unused, kept for callers)."
    return main_in_process(argv)


@pytest.fixture(scope='session')
def sandbox(tmp_path_factory) -> Path:
    "A session folder holding the no-network `sitecustomize` and a throwaway HOME."
    d = tmp_path_factory.mktemp('sandbox')
    (d/'pypath').mkdir()
    (d/'pypath'/'sitecustomize.py').write_text(NO_NETWORK)
    (d/'home').mkdir()
    return d


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    "An empty charrnn cache folder for one test (`CHARRNN_CACHE`)."
    d = tmp_path/'cache'
    d.mkdir()
    return d


@pytest.fixture(scope='session')
def cli(tmp_path_factory):
    """Run `charrnn ARGS` in this process (`charrnn.cli.main`) and return a `Result`.

    `cli('train', 'x.txt', ...)`; `env` adds or overrides variables around the call (None removes one).
    Unless `env` sets them, `CHARRNN_CACHE` is a fresh empty folder and every downloadable corpus's URL is a
    closed local port."""
    counter = iter(range(10**6))
    def run(*args, env:dict|None=None) -> Result:
        cache = tmp_path_factory.mktemp(f'cache{next(counter)}')
        return main_in_process(args, {**charrnn_env(cache), **(env or {})})
    return run


@pytest.fixture(scope='session')
def run_cli(sandbox, tmp_path_factory):
    """Run a command in a subprocess with a clean environment and return a `Result`.

    `run_cli('train', 'x.txt', ...)` runs the `charrnn` console script; `module='charrnn'` runs
    `python -m charrnn ...` instead, and `exe` any other command. `env` adds or overrides variables (None
    removes one); unless it sets them, the cache and the corpora's URLs are as for `cli`."""
    assert CHARRNN.exists(), f"no charrnn console script next to {sys.executable} (pip install -e .)"
    counter = iter(range(10**6))

    def run(*args, env:dict|None=None, module:str|None=None, exe:list|None=None, cwd=None,
            timeout:float=180) -> Result:
        base = dict(PATH=f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin", HOME=str(sandbox/'home'),
                    LANG='C.UTF-8', LC_ALL='C.UTF-8', PYTHONPATH=str(sandbox/'pypath'),
                    PYTHONDONTWRITEBYTECODE='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg',
                    **charrnn_env(tmp_path_factory.mktemp(f'cache{next(counter)}')))
        for k, v in (env or {}).items():
            if v is None: base.pop(k, None)
            else: base[k] = str(v)
        if exe is not None: cmd = list(exe)
        elif module: cmd = [sys.executable, '-m', module]
        else: cmd = [str(CHARRNN)]
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
    """A tiny run trained once for the session by the real console script: `(run folder, Result)`.
    Never modify it: use `run_copy`."""
    out = tmp_path_factory.mktemp('trained')/'run'
    r = run_cli('train', corpus, '--out', out, *TINY, '--max-steps', TRAIN_STEPS, '--eval-every', 5,
                '--seed', 0)
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
    files = sorted(p for p in Path(folder).rglob('*') if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def assert_user_error(r:Result, cmd:str, *needles:str) -> str:
    """`r` failed as a user error of `charrnn cmd`: status 2, one line on stderr, no traceback; the line names
    each of `needles`. Returns the line."""
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
