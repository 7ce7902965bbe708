"""Named corpora (charrnn.data, issue 12): the embedded tiny Shakespeare and the verified download of
`shakespeare`; (issue 20) `python-stdlib`, Python source built from this interpreter's standard library;
(issue 14, charrnn.textcache) the streaming preparation of a text and the cache of its ids; and (issue 19)
texts given as pipes or FIFOs, a cache whose header is damaged or whose folder is a file, a symlink loop, and
a SIGTERM during a cache write.

Everything here is made by the tests: nothing outside the repository is read (tests/test_standalone.py proves
it by running this file in a copy of the repository with nothing beside it).

The embedded copy: it unpacks to the bytes whose sha256 charrnn records, and `charrnn train tinyshakespeare`
works with no network and an empty cache. The download: a local HTTP server on 127.0.0.1 serves a text made by
the tests (and a copy with one byte changed); `CHARRNN_SHAKESPEARE_URL` points the corpus at it and the
corpus's recorded sha256 is, for the test, that of the made text. A good download is cached and reused; a
corrupted one, a 404 and a dead port are each one line (`charrnn train: error: ...`, exit status 2) and leave
nothing in the cache. Each case runs through the library and through `charrnn.cli.main` in this process (the
sha256 record can only be patched in this process).

python-stdlib: built twice (here and in another process with another hash seed) it is the same bytes; the
size and sha256 recorded for this Python match; `charrnn train python-stdlib` trains with every network
connection refused; a bad cached copy is rebuilt; on a Python with no record, or whose library differs from
it, one note says so; a Python with no library sources is refused in one line.

The ids cache: a second preparation of the same text maps the cached file (same inode and mtime, no encoding);
a changed text gets its own file; a truncated, bit-flipped or foreign cache file, or one with any byte of its
header changed, is caught and rewritten; the ids always equal `Vocab.encode` of `read_text`; and preparing a
30 MB text (tiny Shakespeare, repeated) stays within about a byte per character of memory (bench/scale.py
prints the figures at 1 MB to 1 GB).
"""
from __future__ import annotations

import dataclasses, gzip, hashlib, http.server, json, os, random, signal, socket, subprocess, sys, threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import charrnn.cli
import charrnn.data
import charrnn.textcache
from charrnn.data import CORPORA, CORPORA_DIR, DownloadError, cache_dir, file_sha256, get_corpus
from charrnn.data import STDLIB_KEY, STDLIB_RECORD, resolve_text_path, stdlib_text
from charrnn.textcache import encode_file, ids_file, text_ids, _load_ids
from charrnn.encoding import TextFileError, Vocab, read_text
from charrnn.run import prepare_text
from conftest import TINY, TINY_SHAKESPEARE_BYTES, Result, assert_user_error, checkpoint_summary, run_main

TS_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
SH_SHA256 = '582d1c5e8bb8b9d0ad266dbb36b3d87e6380d909d5d73087d1dc227574bc4ebd'
SHORT = [*TINY, '--max-steps', '2', '--eval-every', '2', '--val-frac', '0.01']  # 2 steps, validating on 1%
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONDONTWRITEBYTECODE': '1'}


def cached_files(cache:Path) -> list:
    "Every file in a cache folder, as paths relative to it."
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob('*') if p.is_file())

def checkpoints(folder:Path) -> list:
    return sorted(p.name for p in Path(folder).glob('*.safetensors')) if Path(folder).exists() else []

def made_works(seed:int=0) -> bytes:
    "A stand-in for the complete works, made here: 2,000 lines of tiny Shakespeare in an order set by `seed`."
    lines = TINY_SHAKESPEARE_BYTES.decode('utf-8').splitlines(keepends=True)
    random.Random(seed).shuffle(lines)
    return ''.join(lines[:2000]).encode('utf-8')


# ------------------------------------------------------------------ the embedded tiny Shakespeare

def test_the_recorded_checksums():
    "The package's tiny Shakespeare has the sha256 recorded for it; the complete works' record is pinned."
    assert CORPORA['tinyshakespeare'].sha256 == TS_SHA256
    assert hashlib.sha256(TINY_SHAKESPEARE_BYTES).hexdigest() == TS_SHA256
    assert CORPORA['shakespeare'].sha256 == SH_SHA256  # its file is not in the repository: downloads below
    sonnets = gzip.decompress((CORPORA_DIR/CORPORA['sonnets'].embedded).read_bytes())
    assert hashlib.sha256(sonnets).hexdigest() == CORPORA['sonnets'].sha256

def test_the_embedded_copy_is_small_and_exact():
    gz = Path(str(CORPORA_DIR/CORPORA['tinyshakespeare'].embedded))
    assert gz.stat().st_size < 500_000, gz.stat().st_size
    data = gzip.decompress(gz.read_bytes())
    assert len(data) == 1_115_394 and hashlib.sha256(data).hexdigest() == TS_SHA256

def test_tinyshakespeare_unpacks_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('CHARRNN_TINYSHAKESPEARE_URL', 'http://127.0.0.1:9/never.txt')  # never used: embedded
    p = resolve_text_path('tinyshakespeare')
    assert p == cache_dir()/'tinyshakespeare.txt' == tmp_path/'cache'/'tinyshakespeare.txt'
    assert file_sha256(p) == TS_SHA256
    p.write_text('tampered')  # a damaged copy in the cache is unpacked again
    assert file_sha256(get_corpus('tinyshakespeare')) == TS_SHA256
    assert [f.name for f in (tmp_path/'cache').iterdir()] == ['tinyshakespeare.txt']

def test_resolve_text_path_keeps_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path/'shakespeare').write_text('my own file')  # an existing file wins over the corpus name
    assert resolve_text_path('shakespeare') == Path('shakespeare')
    assert resolve_text_path(tmp_path/'nope.txt') == tmp_path/'nope.txt'
    (tmp_path/'tinyshakespeare.txt').write_text('my own file, named as a corpus is in the cache')
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    mine = resolve_text_path('tinyshakespeare.txt')  # not the cache's copy: left alone
    assert mine == Path('tinyshakespeare.txt') and mine.read_text().startswith('my own file')

def test_the_cached_copy_of_a_corpus_is_checked_when_given_by_its_path(tmp_path, monkeypatch):
    "A resumed run names its corpus by its cached copy's path: that copy is checked (and repaired) too."
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    p = get_corpus('tinyshakespeare')
    p.write_bytes(TINY_SHAKESPEARE_BYTES[:-1] + b'?')  # tampered with: same size
    assert file_sha256(resolve_text_path(str(p))) == TS_SHA256
    assert file_sha256(p) == TS_SHA256

def test_resuming_a_named_corpus_checks_its_cached_copy(tmp_path, monkeypatch, capsys):
    "`charrnn train tinyshakespeare`, its cached copy tampered with, `--resume` with no text: the true text."
    monkeypatch.setenv('CHARRNN_CACHE', str(cache := tmp_path/'cache'))
    run = tmp_path/'run'
    r = run_main(['train', 'tinyshakespeare', '--out', run, *SHORT], capsys)
    assert r.returncode == 0, r
    (cache/'tinyshakespeare.txt').write_bytes(TINY_SHAKESPEARE_BYTES.replace(b'KING', b'QUEE'))
    r = run_main(['train', '--out', run, '--resume', '--max-steps', '4'], capsys)
    assert r.returncode == 0, r
    assert 'differs' not in r.stdout + r.stderr, r
    assert checkpoint_summary(run/'latest.safetensors')['corpus']['sha256'] == TS_SHA256
    assert file_sha256(cache/'tinyshakespeare.txt') == TS_SHA256

def test_an_unknown_corpus_lists_the_names():
    with pytest.raises(Exception, match='tinyshakespeare, shakespeare, sonnets, python-stdlib'):
        get_corpus('shakespear')

def test_train_tinyshakespeare_offline(run_cli, cache_dir, tmp_path):
    "The embedded corpus: no network (the sandbox refuses it), an empty cache."
    env = {'CHARRNN_TINYSHAKESPEARE_URL': None, 'CHARRNN_CACHE': cache_dir}
    r = run_cli('train', 'tinyshakespeare', '--out', tmp_path/'run', *SHORT, env=env)
    assert r.returncode == 0, r
    assert cached_files(cache_dir) == ['ids/' + TS_SHA256 + '.ids', 'tinyshakespeare.txt']  # corpus, ids
    corpus = checkpoint_summary(tmp_path/'run'/'best.safetensors')['corpus']
    assert corpus['sha256'] == TS_SHA256 and corpus['name'] == 'tinyshakespeare', corpus

def test_resolve_tinyshakespeare_in_a_bare_process(run_cli, cache_dir):
    code = ("from charrnn.data import resolve_text_path, file_sha256\n"
            "print(file_sha256(resolve_text_path('tinyshakespeare')))")
    r = run_cli(exe=['python', '-c', code], env={'CHARRNN_CACHE': cache_dir})
    assert r.returncode == 0 and r.stdout.strip() == TS_SHA256, r


# ------------------------------------------------------------------ a cache folder that is a file

def test_a_cache_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (f := tmp_path/'cache').write_text('a file, not a folder')
    monkeypatch.setenv('CHARRNN_CACHE', str(f))
    with pytest.raises(DownloadError) as e: get_corpus('tinyshakespeare')
    msg = str(e.value)
    assert '\n' not in msg and f'{f} is a file' in msg and 'CHARRNN_CACHE' in msg, msg
    assert f.read_text() == 'a file, not a folder'

def test_a_cache_folder_that_is_a_file_through_the_cli(tmp_path, monkeypatch, capsys):
    (f := tmp_path/'cache').write_text('a file, not a folder')
    monkeypatch.setenv('CHARRNN_CACHE', str(f))
    r = run_main(['train', 'tinyshakespeare', '--out', tmp_path/'run', *SHORT], capsys)
    assert_user_error(r, 'train', 'is a file', 'CHARRNN_CACHE')
    assert not (tmp_path/'run').exists()


# -------------------------------------------------------- python-stdlib: Python source built here (issue 20)

STDLIB_FILE = f'{STDLIB_KEY}/python-stdlib.txt'  # its copy in the cache, one per Python
BUILD = ("import hashlib; from charrnn.data import stdlib_text; "
         "b = stdlib_text(); print(len(b), hashlib.sha256(b).hexdigest())")

def sha(data:bytes) -> str:
    return hashlib.sha256(data).hexdigest()

def test_python_stdlib_is_built_the_same_every_time(tmp_path, monkeypatch):
    "Built twice, into two caches, and in another process with another hash seed: the same bytes."
    first = stdlib_text()
    copies = []
    for name in ('one', 'two'):
        monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/name))
        copies.append(get_corpus('python-stdlib'))
    assert copies == [tmp_path/'one'/STDLIB_FILE, tmp_path/'two'/STDLIB_FILE]
    assert [file_sha256(c) for c in copies] == [sha(first), sha(first)]
    r = subprocess.run([sys.executable, '-c', BUILD], capture_output=True, text=True, timeout=120,
                       env={**ENV, 'PYTHONHASHSEED': '12345'})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(len(first)), sha(first)]
    assert 1_000_000 < len(first) < 3_000_000  # a few MB at most: it trains on a CPU in minutes
    assert first.startswith(b'# ---- abc.py ----\n') and b'\n# ---- os.py ----\n' in first

def test_the_sha256_recorded_for_this_python_matches():
    "This Python's build is the recorded one (the record for the Python the project runs on is pinned)."
    pinned = (2_042_089, '9da1b205ca79ed4edc1057ca52c35ca2fb04ebc889c22a6559e85984435c3a15')
    assert STDLIB_RECORD['cpython-3.11.7'] == pinned
    if STDLIB_KEY not in STDLIB_RECORD: pytest.skip(f"charrnn records no python-stdlib for {STDLIB_KEY}")
    data = stdlib_text()
    assert (len(data), sha(data)) == STDLIB_RECORD[STDLIB_KEY]
    assert CORPORA['python-stdlib'].sha256 == STDLIB_RECORD[STDLIB_KEY][1]

def test_train_python_stdlib_offline(run_cli, cache_dir, tmp_path):
    "`charrnn train python-stdlib`: no network (the sandbox refuses every connection), an empty cache."
    r = run_cli('train', 'python-stdlib', '--out', tmp_path/'run', *SHORT, env={'CHARRNN_CACHE': cache_dir})
    assert r.returncode == 0, r
    corpus = checkpoint_summary(tmp_path/'run'/'best.safetensors')['corpus']
    assert corpus['name'] == 'python-stdlib' and corpus['sha256'] == sha(stdlib_text()), corpus
    assert cached_files(cache_dir) == sorted([STDLIB_FILE, f"ids/{corpus['sha256']}.ids"])

@pytest.mark.parametrize('damage', ['tampered', 'truncated', 'emptied'])
def test_a_bad_copy_of_python_stdlib_is_rebuilt(tmp_path, monkeypatch, damage):
    "A damaged cached copy, asked for by name or by its path (as a resumed run asks): built again, in place."
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    p = get_corpus('python-stdlib')
    good = p.read_bytes()
    bad = {'tampered': good.replace(b'def ', b'fed ', 1), 'truncated': good[:-100], 'emptied': b''}[damage]
    for ask in ('python-stdlib', str(p)):
        p.write_bytes(bad)
        assert resolve_text_path(ask) == p and p.read_bytes() == good
    assert cached_files(tmp_path/'cache') == [STDLIB_FILE]  # no temporary file left beside it

@pytest.mark.parametrize('recorded', ['', '0' * 64])
def test_python_stdlib_with_no_matching_record_says_so(tmp_path, monkeypatch, capsys, recorded):
    "Another Python (no record) or a changed library (another sha256): built, used, and one note says so."
    other = dataclasses.replace(CORPORA['python-stdlib'], sha256=recorded)
    monkeypatch.setitem(CORPORA, 'python-stdlib', other)
    monkeypatch.setattr(charrnn.data, '_noted', set())
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    p = get_corpus('python-stdlib')
    p.write_bytes(b'tampered')  # with no record to check it against, the copy is checked against a new build
    for _ in range(2): assert get_corpus('python-stdlib').read_bytes() == stdlib_text()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith('note: python-stdlib was built') and STDLIB_KEY in err[0], err
    assert ('records none' if recorded == '' else 'was changed') in err[0], err

def test_a_python_with_no_library_sources_is_one_line(tmp_path, monkeypatch, capsys):
    "A library shipped compiled only: `charrnn train python-stdlib` exits 2 in one line, leaving nothing."
    (lib := tmp_path/'lib').mkdir()
    (lib/'os.pyc').write_bytes(b'compiled')
    build = partial(stdlib_text, lib)  # the library's folder, as sysconfig would give it
    monkeypatch.setitem(CORPORA, 'python-stdlib', dataclasses.replace(CORPORA['python-stdlib'], build=build))
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    r = run_main(['train', 'python-stdlib', '--out', tmp_path/'run', *SHORT], capsys)
    assert_user_error(r, 'train', f'{lib} holds no Python sources', 'pass the path of a text file')
    assert not (tmp_path/'run').exists() and cached_files(tmp_path/'cache') == []


# ------------------------------------------------------------------ downloading the complete works

class _Handler(http.server.SimpleHTTPRequestHandler):
    "Serves the test's folder; /corrupt/NAME is NAME with one byte changed. Records every path asked for."
    def do_GET(self):
        self.server.requests.append(self.path)
        if not self.path.startswith('/corrupt/'): return super().do_GET()
        body = self.server.corrupt.get(self.path.removeprefix('/corrupt/'))
        if body is None: return self.send_error(404)
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass

@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "A local HTTP server serving a folder holding `shakespeare.txt` (`made_works()`): `(server, base url)`."
    served = tmp_path_factory.mktemp('served')
    (served/'shakespeare.txt').write_bytes(good := made_works())
    bad = bytearray(good)
    i = len(bad) // 2
    bad[i] = ord('#') if bad[i] != ord('#') else ord('%')
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(_Handler, directory=str(served)))
    srv.requests, srv.corrupt = [], {'shakespeare.txt': bytes(bad)}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()

@pytest.fixture
def works(monkeypatch) -> bytes:
    "The made text's bytes; for this test, the `shakespeare` corpus's recorded sha256 is theirs."
    body = made_works()
    monkeypatch.setitem(CORPORA, 'shakespeare', dataclasses.replace(CORPORA['shakespeare'],
                                                                     sha256=hashlib.sha256(body).hexdigest()))
    return body

def dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/shakespeare.txt'

def use(monkeypatch, cache:Path, url:str):
    monkeypatch.setenv('CHARRNN_CACHE', str(cache))
    monkeypatch.setenv('CHARRNN_SHAKESPEARE_URL', url)

# --- through the library

def test_library_download_then_cache(server, works, cache_dir, monkeypatch):
    srv, base = server
    srv.requests.clear()
    use(monkeypatch, cache_dir, f'{base}/shakespeare.txt')
    p = get_corpus('shakespeare')
    assert p == cache_dir/'shakespeare.txt' and srv.requests == ['/shakespeare.txt']
    assert p.read_bytes() == works
    use(monkeypatch, cache_dir, f'{base}/gone.txt')  # cached and checked: nothing is fetched
    assert resolve_text_path('shakespeare') == p and srv.requests == ['/shakespeare.txt']
    p.write_bytes(p.read_bytes()[:-1])  # a damaged cache is fetched again (and, here, fails: nothing is left)
    with pytest.raises(DownloadError, match='not found'): get_corpus('shakespeare')
    assert list(cache_dir.iterdir()) == []

def test_the_real_record_refuses_the_made_text(server, cache_dir, monkeypatch):
    "Unpatched, the record is the complete works' sha256: the made text is refused (the check above is real)."
    srv, base = server
    use(monkeypatch, cache_dir, f'{base}/shakespeare.txt')
    with pytest.raises(DownloadError, match='sha256'): get_corpus('shakespeare')
    assert list(cache_dir.iterdir()) == []

@pytest.mark.parametrize('case', ['corrupt', '404', 'dead'])
def test_library_failed_download_keeps_nothing(server, works, cache_dir, monkeypatch, case):
    srv, base = server
    url = {'corrupt': f'{base}/corrupt/shakespeare.txt', '404': f'{base}/gone.txt', 'dead': dead_url()}[case]
    use(monkeypatch, cache_dir, url)
    with pytest.raises(DownloadError) as e: get_corpus('shakespeare')
    msg = str(e.value)
    assert '\n' not in msg and url in msg, msg
    assert {'corrupt': 'sha256', '404': 'not found', 'dead': 'could not download'}[case] in msg.lower(), msg
    assert list(cache_dir.iterdir()) == []

# --- through the command (`charrnn.cli.main`, in this process), as test_cli.py's download tests do

def test_download_then_cache(server, works, cache_dir, tmp_path, monkeypatch, capsys):
    srv, base = server
    srv.requests.clear()
    sha = CORPORA['shakespeare'].sha256
    use(monkeypatch, cache_dir, f'{base}/shakespeare.txt')
    r = run_main(['train', 'shakespeare', '--out', tmp_path/'run1', *SHORT], capsys)
    assert r.returncode == 0, r
    assert srv.requests == ['/shakespeare.txt']
    assert cached_files(cache_dir) == ['ids/' + sha + '.ids', 'shakespeare.txt']
    assert (cache_dir/'shakespeare.txt').read_bytes() == works
    corpus = checkpoint_summary(tmp_path/'run1'/'best.safetensors')['corpus']
    assert corpus['sha256'] == sha and corpus['name'] == 'shakespeare', corpus
    # the server now answers 404: the checked copy in the cache is used, and nothing is fetched
    use(monkeypatch, cache_dir, f'{base}/gone.txt')
    r = run_main(['train', 'shakespeare', '--out', tmp_path/'run2', *SHORT], capsys)
    assert r.returncode == 0, r
    assert srv.requests == ['/shakespeare.txt']
    assert cached_files(cache_dir) == ['ids/' + sha + '.ids', 'shakespeare.txt']

def test_download_with_wrong_checksum_keeps_nothing(server, works, cache_dir, tmp_path, monkeypatch, capsys):
    srv, base = server
    use(monkeypatch, cache_dir, f'{base}/corrupt/shakespeare.txt')
    r = run_main(['train', 'shakespeare', '--out', tmp_path/'run', *SHORT], capsys)
    assert_user_error(r, 'train', 'sha256', 'corrupt')
    assert list(cache_dir.iterdir()) == [], 'a download that fails its checksum must leave nothing'
    assert not checkpoints(tmp_path/'run')

def test_download_404(server, works, cache_dir, tmp_path, monkeypatch, capsys):
    srv, base = server
    use(monkeypatch, cache_dir, f'{base}/gone.txt')
    r = run_main(['train', 'shakespeare', '--out', tmp_path/'run', *SHORT], capsys)
    assert_user_error(r, 'train', f'{base}/gone.txt', 'not found')
    assert list(cache_dir.iterdir()) == []
    assert not checkpoints(tmp_path/'run')

def test_download_from_a_dead_server(works, cache_dir, tmp_path, monkeypatch, capsys):
    use(monkeypatch, cache_dir, url := dead_url())
    r = run_main(['train', 'shakespeare', '--out', tmp_path/'run', *SHORT], capsys)
    assert_user_error(r, 'train', url, 'could not download')
    assert list(cache_dir.iterdir()) == []
    assert not checkpoints(tmp_path/'run')


# -------------------------------------------------------- streaming preparation and the ids cache (issue 14)

@pytest.fixture
def text(tmp_path, monkeypatch) -> Path:
    "A copy of tiny Shakespeare to prepare, with `CHARRNN_CACHE` in a fresh folder."
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    (p := tmp_path/'text.txt').write_bytes(TINY_SHAKESPEARE_BYTES)
    return p

@pytest.fixture
def encodings(monkeypatch) -> list:
    "Records every call of `encode_file` made by `text_ids` (the path encoded)."
    calls, real = [], charrnn.textcache.encode_file
    def counted(p, *a, **k):
        calls.append(Path(p))
        return real(p, *a, **k)
    monkeypatch.setattr(charrnn.textcache, 'encode_file', counted)
    return calls

def plain(path:Path):
    "The ids as the lessons make them: `Vocab.encode` of the whole text."
    s = read_text(path)
    v = Vocab.from_text(s)
    return v, v.encode(s)

def mapped_file(address:int) -> str|None:
    "The file memory-mapped at `address` in this process, from /proc/self/maps (Linux)."
    for line in Path('/proc/self/maps').read_text().splitlines():
        span, *rest = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in span.split('-'))
        if lo <= address < hi: return rest[4] if len(rest) == 5 else None
    return None

def stamp(p:Path) -> tuple:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size

def test_the_cache_is_reused_for_the_same_text(text, encodings):
    first = text_ids(text)
    f = ids_file(first.sha256)
    assert encodings == [text] and f.is_file() and first.sha256 == TS_SHA256
    before = stamp(f)
    again = text_ids(text)
    assert encodings == [text], 'the second preparation must not encode again'
    assert stamp(f) == before, 'the cache file must be reused as it is, not rewritten'
    assert mapped_file(again.ids.data_ptr()) == str(f)  # the ids are the cache file, memory-mapped
    assert (again.vocab, again.sha256) == (first.vocab, first.sha256) and torch.equal(first.ids, again.ids)
    v, ids = plain(text)
    assert first.vocab == v and again.ids.dtype == ids.dtype == torch.uint8 and torch.equal(again.ids, ids)

def test_a_changed_text_never_reuses_the_cache(text, encodings):
    before = text_ids(text)
    old = stamp(ids_file(before.sha256))
    b = bytearray(text.read_bytes())
    b[len(b) // 2] = ord('#')  # one character changed, same size, same mtime
    st = text.stat()
    text.write_bytes(bytes(b))
    os.utime(text, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = text_ids(text)
    assert after.sha256 != before.sha256 and encodings == [text, text]
    assert ids_file(after.sha256).is_file()  # its own file
    assert stamp(ids_file(before.sha256)) == old  # and the other text's is left alone
    v, ids = plain(text)
    assert after.vocab == v and '#' in v and torch.equal(after.ids, ids)
    assert not torch.equal(after.ids, before.ids)

DAMAGE = {
    'truncated': lambda b: b[:len(b) // 2],
    'one id flipped': lambda b: b[:-10] + bytes([b[-10] ^ 0x01]) + b[-9:],
    'header changed': lambda b: b.replace(b'"n": ', b'"n": 1', 1),
    'empty': lambda b: b'',
    'not a cache file': lambda b: b'hello\n' * 100,
}

@pytest.mark.parametrize('damage', list(DAMAGE))
def test_a_damaged_cache_file_is_rebuilt(text, encodings, damage):
    ids = text_ids(text).ids
    f = ids_file(TS_SHA256)
    good = f.read_bytes()
    f.write_bytes(DAMAGE[damage](good))
    assert torch.equal(text_ids(text).ids, ids)
    assert encodings == [text, text], 'a damaged cache file must not be used'
    assert f.read_bytes() == good  # rebuilt, byte for byte
    assert torch.equal(text_ids(text).ids, ids)
    assert encodings == [text, text]  # and reused from then on

def test_a_half_written_cache_file_is_never_seen(text, encodings, monkeypatch):
    "A write that fails half-way (a full disk) leaves no file under the cache's name; the ids are right."
    real = os.replace
    def full_disk(src, dst): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(charrnn.textcache.os, 'replace', full_disk)
    ids = text_ids(text).ids
    assert not ids_file(TS_SHA256).exists()
    assert list(ids_file(TS_SHA256).parent.iterdir()) == []  # no temporary file left either
    monkeypatch.setattr(charrnn.textcache.os, 'replace', real)
    assert torch.equal(ids, plain(text)[1])

@pytest.mark.parametrize('kind', ['unicode', 'crlf+bom', 'many chars'])
def test_streamed_ids_equal_the_plain_encode(tmp_path, kind):
    body = {'unicode': 'Ça va? Ωμέγα, 𝄞 and 漢字.\n' * 300,
            'crlf+bom': '\ufeff' + 'one line\r\nanother\r\n\r\n' * 300 + 'a lone \r at the end\r',
            'many chars': ''.join(chr(0x3400 + i) for i in range(40_000)) + '\n' + 'abc' * 1000}[kind]
    (p := tmp_path/'t.txt').write_bytes(body.encode('utf-8'))
    v, ids = plain(p)
    chunks = (64, 4096, 1 << 22) if kind == 'many chars' else (1, 3, 64, 4096, 1 << 22)
    for chunk in chunks:  # cuts anywhere
        enc = encode_file(p, chunk)
        assert enc.vocab == v and enc.sha256 == file_sha256(p)
        assert enc.ids.dtype == ids.numpy().dtype and np.array_equal(enc.ids, ids.numpy()), chunk

def test_prepare_text_gives_cached_ids_without_copies(text):
    "prepare_text keeps its signature and results; the ids are small integers, and training uses them as is."
    from charrnn.batching import StreamBatcher
    from charrnn.model import CharModel, ModelConfig
    from charrnn.training import Learner, TrainConfig
    for run in range(2):  # encoded, then from the cache
        prepared = prepare_text(text)
        vocab, train_ids = prepared[0], prepared[1]
        val_ids, corpus = prepared[2], prepared[3]
        assert corpus == dict(name='text', path=str(text), sha256=TS_SHA256, chars=1_115_394, vocab_size=65)
        assert (len(train_ids), len(val_ids), train_ids.dtype) == (1_003_855, 111_539, torch.uint8)
        assert torch.equal(torch.cat([train_ids, val_ids]), plain(text)[1])
    model = CharModel(vocab, ModelConfig(hidden=8, layers=1))
    learn = Learner(model, train_ids, val_ids, TrainConfig(batch_size=4, seq_len=8))
    assert learn.train_ids.data_ptr() == train_ids.data_ptr()  # .to('cpu') does not copy
    b = StreamBatcher(learn.train_ids, 4, 8)
    assert b.x.dtype == torch.uint8
    assert b.x.untyped_storage().data_ptr() == train_ids.untyped_storage().data_ptr()

def test_an_unwritable_cache_costs_only_time(text, monkeypatch, tmp_path):
    (tmp_path/'a-file').write_text('not a folder')
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'a-file'/'cache'))
    got = text_ids(text)
    assert got.sha256 == TS_SHA256 and torch.equal(got.ids, plain(text)[1])

PEAK = '''
import re, sys
from charrnn.textcache import text_ids
def status(key):
    return int(re.search(key + r':\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024
open('/proc/self/clear_refs', 'w').write('5')  # the peak (VmHWM) reset to the memory in use now
base = status('VmRSS')
ids = text_ids(sys.argv[1]).ids
print(len(ids), base, status('VmHWM'))
'''

@pytest.mark.skipif(not os.access('/proc/self/clear_refs', os.W_OK),
                    reason='needs Linux /proc/self/clear_refs to reset the peak')
def test_preparing_a_big_text_costs_about_a_byte_per_character(tmp_path):
    "30 MB of text (tiny Shakespeare, 27 times): preparing it raises the peak memory by about the ids' size."
    body, times = TINY_SHAKESPEARE_BYTES, 27
    with open(p := tmp_path/'big.txt', 'wb') as f:
        for _ in range(times): f.write(body)
    env = {**os.environ, 'CHARRNN_CACHE': str(tmp_path/'cache'), 'OMP_NUM_THREADS': '1'}
    for run in ('encoded', 'cached'):
        r = subprocess.run([sys.executable, '-c', PEAK, str(p)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        n, base = map(int, r.stdout.split()[:2])
        peak = int(r.stdout.split()[2])
        assert n == times * len(body)
        print(f"{run}: {n / 1e6:.0f} M characters, peak memory {(peak - base) / 1e6:.0f} MB above the "
              f"{base / 1e6:.0f} MB in use before")
        assert peak - base < 2 * n + 64e6, (run, peak - base)  # the ids (a byte a character) and a piece
        assert run == 'cached' or peak - base > n // 2  # the measure sees the ids: encoded, all are in memory


# ------------------------------------------------------------ the cache's header, pipes, FIFOs (issue 19)

def header_length(f:Path) -> int:
    "Where a cache file's ids start: after its second line."
    b = f.read_bytes()
    return b.index(b'\n', b.index(b'\n') + 1) + 1

def test_every_byte_of_the_header_is_checked(text):
    "Any one byte of a cache file's header changed (vocabulary included): the file is not used."
    sha = text_ids(text).sha256
    f = ids_file(sha)
    good = f.read_bytes()
    n = header_length(f)
    assert n % 64 == 0 and n < len(good) and _load_ids(f, sha) is not None
    for i in range(n):
        for new in {good[i] ^ 0x01, good[i] ^ 0x20, 0x20}:
            if new == good[i]: continue
            f.write_bytes(good[:i] + bytes([new]) + good[i + 1:])
            assert _load_ids(f, sha) is None, (i, good[i:i + 1], bytes([new]))

def test_a_changed_vocabulary_is_rebuilt(text, encodings):
    "The vocabulary is in the header: 'a' swapped for '@' there would shift ids; it is caught and rebuilt."
    first = text_ids(text)
    f = ids_file(first.sha256)
    good = f.read_bytes()
    head = good[:header_length(f)]
    k = head.index(b'a', head.index(b'"vocab": "') + len(b'"vocab": "'))
    f.write_bytes(head[:k] + b'@' + good[k + 1:])  # still valid JSON, 65 distinct characters
    again = text_ids(text)
    assert encodings == [text, text] and again.vocab == first.vocab and torch.equal(again.ids, first.ids)
    assert f.read_bytes() == good

@pytest.mark.parametrize('meta', [dict(dtype='object'), dict(n=-1), dict(vocab=123), dict(vocab='ab'),
                                  dict(n=10**30), dict(dtype='int64'), 'not a dict', dict(sha256=None)])
def test_a_well_formed_but_wrong_header_is_never_used(text, meta):
    "A header whose checksum is right but whose content is wrong (a bug, a hand-made file): `None`, no crash."
    vocab, ids = text_ids(text)[:2]
    sha = TS_SHA256
    f = ids_file(sha)
    body = f.read_bytes()[header_length(f):]
    good = dict(sha256=sha, vocab=''.join(vocab.itos), dtype='uint8', n=len(ids))
    m = json.dumps({**good, **meta} if isinstance(meta, dict) else meta).encode()
    f.write_bytes(charrnn.textcache._ids_header(m, np.frombuffer(body, np.uint8)) + body)
    assert _load_ids(f, sha) is None
    header = charrnn.textcache._ids_header(json.dumps(good).encode(), np.frombuffer(body, np.uint8))
    f.write_bytes(header + body)
    assert _load_ids(f, sha) is not None  # the same file with the right header is used: the test can tell

def test_the_ids_are_written_by_the_one_atomic_write(text, monkeypatch):
    "`_save_ids` writes through `charrnn.core.atomic_write_bytes` (fsync included), in pieces: no copy."
    import charrnn.core
    calls, real = [], charrnn.core.atomic_write_bytes
    def recorded(p, d):
        calls.append((p, d))
        return real(p, d)
    monkeypatch.setattr(charrnn.textcache, 'atomic_write_bytes', recorded)
    ids = text_ids(text).ids
    assert [c[0] for c in calls] == [ids_file(TS_SHA256)]
    head, body = calls[0][1]
    assert len(body) == len(ids) and np.shares_memory(np.frombuffer(body, np.uint8), ids.numpy())

SLOW_WRITE = '''
import os, sys, time, charrnn.core
from charrnn.textcache import text_ids
real = os.fsync
def slow(fd): print('writing', flush=True); time.sleep(60); real(fd)
os.fsync = slow  # the cache write stops just before its fsync: the temporary file is on disk, half-way
text_ids(sys.argv[1])
print('finished', flush=True)
'''

def test_sigterm_during_a_cache_write_leaves_no_temporary_file(text, tmp_path):
    env = {**ENV, 'CHARRNN_CACHE': str(tmp_path/'cache')}
    p = subprocess.Popen([sys.executable, '-c', SLOW_WRITE, str(text)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == 'writing\n', p.stderr.read()
        assert len(list((tmp_path/'cache'/'ids').iterdir())) == 1  # the temporary file, half-way
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    finally: p.kill()
    assert p.returncode == -signal.SIGTERM, (p.returncode, p.stderr.read())  # died of the signal, as it would
    assert list((tmp_path/'cache'/'ids').iterdir()) == []

def test_a_cache_that_cannot_be_written_is_one_note(text, monkeypatch, tmp_path, capsys):
    "The ids folder is a file: the run goes on (the ids in memory), and one line on stderr names the fix."
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'c'))
    (tmp_path/'c').mkdir()
    (tmp_path/'c'/'ids').write_text('a file where the ids folder goes')
    for _ in range(2): got = text_ids(text)
    assert got.sha256 == TS_SHA256 and torch.equal(got.ids, plain(text)[1])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{tmp_path/'c'/'ids'} is a file" in err[0] and 'CHARRNN_CACHE' in err[0], err

def test_a_symlink_loop_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    (loop := tmp_path/'loop.txt').symlink_to('loop.txt')
    with pytest.raises(TextFileError, match='symbolic link') as e: text_ids(loop)
    assert 'loop' in str(e.value) and '\n' not in str(e.value)
    r = run_main(['train', loop, '--out', tmp_path/'run', *SHORT], capsys)
    assert_user_error(r, 'train', 'symbolic link')

def test_a_device_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    with pytest.raises(TextFileError, match='save the text to a file'): text_ids('/dev/null')

def feed(path:str, data:bytes, pieces:int=7):
    "Write `data` to the pipe or FIFO `path` from a thread, in pieces, and close it."
    def run():
        with open(path, 'wb') as f:
            for i in range(pieces):
                f.write(data[i * len(data) // pieces:(i + 1) * len(data) // pieces])
                f.flush()
                time.sleep(0.01)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t

def test_a_pipe_is_read_once(text, encodings):
    "A pipe (/dev/fd/N, as `<(cat f)` gives) is hashed and encoded in one pass; its ids are cached."
    r, w = os.pipe()
    def write():
        with open(w, 'wb') as f: f.write(TINY_SHAKESPEARE_BYTES)
    threading.Thread(target=write, daemon=True).start()
    try: piped = text_ids(f'/dev/fd/{r}')
    finally: os.close(r)
    assert piped.sha256 == TS_SHA256 and len(encodings) == 1
    v, ref = plain(text)
    assert piped.vocab == v and torch.equal(piped.ids, ref) and ids_file(TS_SHA256).is_file()
    ids = text_ids(text).ids  # the file itself: the ids cached from the pipe are used
    assert len(encodings) == 1 and torch.equal(ids, ref)

def test_dev_stdin_is_read_once(text, tmp_path):
    code = ("from charrnn.run import prepare_text; v, t, _, c = prepare_text('/dev/stdin'); "
            "print(c['sha256'], c['chars'])")
    r = subprocess.run([sys.executable, '-c', code], input=TINY_SHAKESPEARE_BYTES, capture_output=True,
                       timeout=120, env={**ENV, 'CHARRNN_CACHE': str(tmp_path/'cache')})
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == [TS_SHA256, '1115394']

def test_a_fifo_with_a_writer_is_read(text, tmp_path):
    os.mkfifo(fifo := tmp_path/'fifo')
    t = feed(str(fifo), TINY_SHAKESPEARE_BYTES)
    got = text_ids(fifo)
    t.join(5)
    assert got.sha256 == TS_SHA256 and torch.equal(got.ids, plain(text)[1])

NO_WRITER = '''
import sys, charrnn.textcache, charrnn.cli
charrnn.textcache.FIFO_WAIT = 1  # seconds (the default waits a minute for a writer)
charrnn.cli.main(['train', sys.argv[1], '--out', sys.argv[2], '--hidden', '8', '--layers', '1',
                  '--max-steps', '1'])
'''

def test_a_fifo_with_no_writer_does_not_hang(tmp_path):
    "Nobody writes to the FIFO: the run gives up after `FIFO_WAIT`, in one line, leaving no lock or folder."
    os.mkfifo(fifo := tmp_path/'fifo')
    r = subprocess.run([sys.executable, '-c', NO_WRITER, str(fifo), str(tmp_path/'run')], capture_output=True,
                       text=True, timeout=120, env={**ENV, 'CHARRNN_CACHE': str(tmp_path/'cache')})
    r = Result(['train'], r.returncode, r.stdout, r.stderr)
    assert_user_error(r, 'train', str(fifo), 'save the text to a file')
    assert not (tmp_path/'run').exists()
