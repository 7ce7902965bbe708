"""Named corpora (charrnn.data, issue 12): the embedded tiny Shakespeare and the verified download of `shakespeare`;
and (issue 14) the streaming preparation of a text and the cache of its ids.

The embedded copy: it unpacks to the exact bytes of ../shared/data/tinyshakespeare.txt, and `charrnn train
tinyshakespeare` works with no network, no CHARRNN_DATA and an empty cache. The download: a local HTTP server on
127.0.0.1 serves ../shared/data (and a copy of the complete works with one byte changed); `CHARRNN_SHAKESPEARE_URL`
points the corpus at it. A good download is cached and reused; a corrupted one, a 404 and a dead port are each one
line (`charrnn train: error: ...`, exit status 2) and leave nothing in the cache. Each case runs through the library
(fast) and through the real `charrnn train` console script (fixtures in conftest.py).

The ids cache: a second preparation of the same text maps the cached file (same inode and mtime, no encoding); a
changed text gets its own file; a truncated, bit-flipped or foreign cache file is caught and rewritten; the ids always
equal `Vocab.encode` of `read_text`; and preparing a 30 MB text stays within about a byte per character of memory
(bench/scale.py prints the figures at 1 MB to 1 GB).
"""
from __future__ import annotations

import gzip, hashlib, http.server, os, resource, socket, subprocess, sys, textwrap, threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import charrnn.data
from charrnn.data import CORPORA, CORPORA_DIR, DownloadError, cache_dir, file_sha256, get_corpus, resolve_text_path
from charrnn.data import encode_file, ids_file, text_ids
from charrnn.encoding import Vocab, read_text
from charrnn.run import prepare_text
from conftest import TINY, assert_user_error, checkpoint_summary

SHARED_DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'  # CI has ../shared beside the clone
TS_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
SH_SHA256 = '582d1c5e8bb8b9d0ad266dbb36b3d87e6380d909d5d73087d1dc227574bc4ebd'
SHORT = [*TINY, '--max-steps', '2', '--eval-every', '2', '--val-frac', '0.01']  # 2 steps, validating on 1% only


def cached_files(cache:Path) -> list:
    "Every file in a cache folder, as paths relative to it."
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob('*') if p.is_file())

def checkpoints(folder:Path) -> list:
    return sorted(p.name for p in Path(folder).glob('*.safetensors')) if Path(folder).exists() else []


# ------------------------------------------------------------------ the embedded tiny Shakespeare

def test_the_checksums_are_those_of_the_shared_files():
    assert CORPORA['tinyshakespeare'].sha256 == TS_SHA256 == file_sha256(SHARED_DATA/'tinyshakespeare.txt')
    assert CORPORA['shakespeare'].sha256 == SH_SHA256 == file_sha256(SHARED_DATA/'shakespeare.txt')

def test_the_embedded_copy_is_small_and_exact():
    gz = Path(str(CORPORA_DIR/CORPORA['tinyshakespeare'].embedded))
    assert gz.stat().st_size < 500_000, gz.stat().st_size
    assert gzip.decompress(gz.read_bytes()) == (SHARED_DATA/'tinyshakespeare.txt').read_bytes()

def test_tinyshakespeare_unpacks_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv('CHARRNN_DATA', raising=False)
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('CHARRNN_TINYSHAKESPEARE_URL', 'http://127.0.0.1:9/never.txt')  # never used: it is embedded
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

def test_an_unknown_corpus_lists_the_names():
    with pytest.raises(Exception, match='tinyshakespeare, shakespeare'): get_corpus('shakespear')

def test_train_tinyshakespeare_offline_with_no_charrnn_data(run_cli, cache_dir, tmp_path):
    "The embedded corpus: no network (the sandbox refuses it), no CHARRNN_DATA, an empty cache."
    env = {'CHARRNN_DATA': None, 'CHARRNN_TINYSHAKESPEARE_URL': None, 'CHARRNN_CACHE': cache_dir}
    r = run_cli('train', 'tinyshakespeare', '--out', tmp_path/'run', *SHORT, env=env)
    assert r.returncode == 0, r
    assert cached_files(cache_dir) == ['ids/' + TS_SHA256 + '.ids', 'tinyshakespeare.txt']  # the corpus, and its ids
    corpus = checkpoint_summary(tmp_path/'run'/'best.safetensors')['corpus']
    assert corpus['sha256'] == TS_SHA256 and corpus['name'] == 'tinyshakespeare', corpus

def test_resolve_tinyshakespeare_in_a_bare_process(run_cli, cache_dir):
    code = "from charrnn.data import resolve_text_path, file_sha256; print(file_sha256(resolve_text_path('tinyshakespeare')))"
    r = run_cli(exe=['python', '-c', code], env={'CHARRNN_DATA': None, 'CHARRNN_CACHE': cache_dir})
    assert r.returncode == 0 and r.stdout.strip() == TS_SHA256, r


# ------------------------------------------------------------------ downloading the complete works

class _Handler(http.server.SimpleHTTPRequestHandler):
    "Serves ../shared/data; /corrupt/NAME is NAME with one byte changed. Records every path asked for."
    def do_GET(self):
        self.server.requests.append(self.path)
        if not self.path.startswith('/corrupt/'): return super().do_GET()
        body = self.server.corrupt.get(self.path.removeprefix('/corrupt/'))
        if body is None: self.send_error(404); return
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass

@pytest.fixture(scope='module')
def server():
    "A local HTTP server serving ../shared/data: `(server, base url)`."
    good = (SHARED_DATA/'shakespeare.txt').read_bytes()
    bad = bytearray(good); i = len(bad) // 2; bad[i] = ord('#') if bad[i] != ord('#') else ord('%')
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(_Handler, directory=str(SHARED_DATA)))
    srv.requests, srv.corrupt = [], {'shakespeare.txt': bytes(bad)}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown(); srv.server_close()

def dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/shakespeare.txt'

def download_env(cache:Path, url:str) -> dict:
    return {'CHARRNN_DATA': None, 'CHARRNN_CACHE': cache, 'CHARRNN_SHAKESPEARE_URL': url}

def use(monkeypatch, cache:Path, url:str):
    for k, v in download_env(cache, url).items():
        if v is None: monkeypatch.delenv(k, raising=False)
        else: monkeypatch.setenv(k, str(v))

# --- through the library

def test_library_download_then_cache(server, cache_dir, monkeypatch):
    srv, base = server; srv.requests.clear()
    use(monkeypatch, cache_dir, f'{base}/shakespeare.txt')
    p = get_corpus('shakespeare')
    assert p == cache_dir/'shakespeare.txt' and srv.requests == ['/shakespeare.txt']
    assert p.read_bytes() == (SHARED_DATA/'shakespeare.txt').read_bytes()
    use(monkeypatch, cache_dir, f'{base}/gone.txt')  # cached and checked: nothing is fetched
    assert resolve_text_path('shakespeare') == p and srv.requests == ['/shakespeare.txt']
    p.write_bytes(p.read_bytes()[:-1])  # a damaged cache is fetched again (and, here, fails: nothing is left)
    with pytest.raises(DownloadError, match='not found'): get_corpus('shakespeare')
    assert list(cache_dir.iterdir()) == []

@pytest.mark.parametrize('case', ['corrupt', '404', 'dead'])
def test_library_failed_download_keeps_nothing(server, cache_dir, monkeypatch, case):
    srv, base = server
    url = {'corrupt': f'{base}/corrupt/shakespeare.txt', '404': f'{base}/gone.txt', 'dead': dead_url()}[case]
    use(monkeypatch, cache_dir, url)
    with pytest.raises(DownloadError) as e: get_corpus('shakespeare')
    msg = str(e.value)
    assert '\n' not in msg and url in msg, msg
    assert {'corrupt': 'sha256', '404': 'not found', 'dead': 'could not download'}[case] in msg.lower(), msg
    assert list(cache_dir.iterdir()) == []

# --- through the real `charrnn train` command (the assertions of test_cli.py's tinyshakespeare download tests)

def test_download_then_cache(run_cli, server, cache_dir, tmp_path):
    srv, base = server; srv.requests.clear()
    r = run_cli('train', 'shakespeare', '--out', tmp_path/'run1', *SHORT, env=download_env(cache_dir, f'{base}/shakespeare.txt'))
    assert r.returncode == 0, r
    assert srv.requests == ['/shakespeare.txt']
    assert cached_files(cache_dir) == ['ids/' + SH_SHA256 + '.ids', 'shakespeare.txt']
    assert (cache_dir/'shakespeare.txt').read_bytes() == (SHARED_DATA/'shakespeare.txt').read_bytes()
    corpus = checkpoint_summary(tmp_path/'run1'/'best.safetensors')['corpus']
    assert corpus['sha256'] == SH_SHA256 and corpus['name'] == 'shakespeare', corpus
    # the server now answers 404: the checked copy in the cache is used, and nothing is fetched
    r = run_cli('train', 'shakespeare', '--out', tmp_path/'run2', *SHORT, env=download_env(cache_dir, f'{base}/gone.txt'))
    assert r.returncode == 0, r
    assert srv.requests == ['/shakespeare.txt']
    assert cached_files(cache_dir) == ['ids/' + SH_SHA256 + '.ids', 'shakespeare.txt']

def test_download_with_wrong_checksum_keeps_nothing(run_cli, server, cache_dir, tmp_path):
    srv, base = server
    r = run_cli('train', 'shakespeare', '--out', tmp_path/'run', *SHORT, env=download_env(cache_dir, f'{base}/corrupt/shakespeare.txt'))
    assert_user_error(r, 'train', 'sha256', 'corrupt')
    assert list(cache_dir.iterdir()) == [], 'a download that fails its checksum must leave nothing in the cache'
    assert not checkpoints(tmp_path/'run')

def test_download_404(run_cli, server, cache_dir, tmp_path):
    srv, base = server
    r = run_cli('train', 'shakespeare', '--out', tmp_path/'run', *SHORT, env=download_env(cache_dir, f'{base}/gone.txt'))
    assert_user_error(r, 'train', f'{base}/gone.txt', 'not found')
    assert list(cache_dir.iterdir()) == []
    assert not checkpoints(tmp_path/'run')

def test_download_from_a_dead_server(run_cli, cache_dir, tmp_path):
    url = dead_url()
    r = run_cli('train', 'shakespeare', '--out', tmp_path/'run', *SHORT, env=download_env(cache_dir, url))
    assert_user_error(r, 'train', url, 'could not download')
    assert list(cache_dir.iterdir()) == []
    assert not checkpoints(tmp_path/'run')


# ------------------------------------------------------------------ streaming preparation and the ids cache (issue 14)

@pytest.fixture
def text(tmp_path, monkeypatch) -> Path:
    "A copy of tiny Shakespeare to prepare, with `CHARRNN_CACHE` in a fresh folder."
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'cache'))
    (p := tmp_path/'text.txt').write_bytes((SHARED_DATA/'tinyshakespeare.txt').read_bytes())
    return p

@pytest.fixture
def encodings(monkeypatch) -> list:
    "Records every call of `encode_file` made by `text_ids` (the path encoded)."
    calls, real = [], charrnn.data.encode_file
    monkeypatch.setattr(charrnn.data, 'encode_file', lambda p, *a, **k: calls.append(Path(p)) or real(p, *a, **k))
    return calls

def plain(path:Path):
    "The ids as the lessons make them: `Vocab.encode` of the whole text."
    s = read_text(path); v = Vocab.from_text(s)
    return v, v.encode(s)

def mapped_file(address:int) -> str|None:
    "The file memory-mapped at `address` in this process, from /proc/self/maps (Linux)."
    for line in Path('/proc/self/maps').read_text().splitlines():
        span, *rest = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in span.split('-'))
        if lo <= address < hi: return rest[4] if len(rest) == 5 else None
    return None

def stamp(p:Path) -> tuple:
    st = p.stat(); return st.st_ino, st.st_mtime_ns, st.st_size

def test_the_cache_is_reused_for_the_same_text(text, encodings):
    v1, ids1, sha = text_ids(text)
    f = ids_file(sha)
    assert encodings == [text] and f.is_file() and sha == TS_SHA256
    before = stamp(f)
    v2, ids2, sha2 = text_ids(text)
    assert encodings == [text], 'the second preparation must not encode again'
    assert stamp(f) == before, 'the cache file must be reused as it is, not rewritten'
    assert mapped_file(ids2.data_ptr()) == str(f)  # the ids are the cache file, memory-mapped
    assert (v2, sha2) == (v1, sha) and torch.equal(ids1, ids2)
    v, ids = plain(text)
    assert v1 == v and ids2.dtype == ids.dtype == torch.uint8 and torch.equal(ids2, ids)

def test_a_changed_text_never_reuses_the_cache(text, encodings):
    _, ids1, sha1 = text_ids(text)
    old = stamp(ids_file(sha1))
    b = bytearray(text.read_bytes()); b[len(b) // 2] = ord('#')  # one character changed, same size, same mtime
    st = text.stat(); text.write_bytes(bytes(b)); os.utime(text, ns=(st.st_atime_ns, st.st_mtime_ns))
    v2, ids2, sha2 = text_ids(text)
    assert sha2 != sha1 and encodings == [text, text]
    assert ids_file(sha2).is_file() and stamp(ids_file(sha1)) == old  # its own file; the other text's is left alone
    v, ids = plain(text)
    assert v2 == v and '#' in v2 and torch.equal(ids2, ids) and not torch.equal(ids2, ids1)

DAMAGE = {
    'truncated': lambda b: b[:len(b) // 2],
    'one id flipped': lambda b: b[:-10] + bytes([b[-10] ^ 0x01]) + b[-9:],
    'header changed': lambda b: b.replace(b'"n": ', b'"n": 1', 1),
    'empty': lambda b: b'',
    'not a cache file': lambda b: b'hello\n' * 100,
}

@pytest.mark.parametrize('damage', list(DAMAGE))
def test_a_damaged_cache_file_is_rebuilt(text, encodings, damage):
    _, ids, sha = text_ids(text)
    f = ids_file(sha); good = f.read_bytes()
    f.write_bytes(DAMAGE[damage](good))
    _, ids2, _ = text_ids(text)
    assert encodings == [text, text], 'a damaged cache file must not be used'
    assert torch.equal(ids2, ids) and f.read_bytes() == good  # rebuilt, byte for byte
    _, ids3, _ = text_ids(text)
    assert encodings == [text, text] and torch.equal(ids3, ids)  # and reused from then on

def test_a_half_written_cache_file_is_never_seen(text, encodings, monkeypatch):
    "A write that fails half-way (here, a full disk) leaves no file under the cache's name; the ids are still right."
    real = os.replace
    def full_disk(src, dst): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(charrnn.data.os, 'replace', full_disk)
    _, ids, sha = text_ids(text)
    assert not ids_file(sha).exists() and list(ids_file(sha).parent.iterdir()) == []  # no temporary file left either
    monkeypatch.setattr(charrnn.data.os, 'replace', real)
    assert torch.equal(ids, plain(text)[1])

@pytest.mark.parametrize('kind', ['unicode', 'crlf+bom', 'many chars'])
def test_streamed_ids_equal_the_plain_encode(tmp_path, kind):
    body = {'unicode': 'Ça va? Ωμέγα, 𝄞 and 漢字.\n' * 300,
            'crlf+bom': '\ufeff' + 'one line\r\nanother\r\n\r\n' * 300 + 'a lone \r at the end\r',
            'many chars': ''.join(chr(0x3400 + i) for i in range(40_000)) + '\n' + 'abc' * 1000}[kind]
    (p := tmp_path/'t.txt').write_bytes(body.encode('utf-8'))
    v, ids = plain(p)
    for chunk in ((64, 4096, 1 << 22) if kind == 'many chars' else (1, 3, 64, 4096, 1 << 22)):  # cuts anywhere
        v2, ids2, sha = encode_file(p, chunk)
        assert v2 == v and sha == file_sha256(p)
        assert ids2.dtype == ids.numpy().dtype and np.array_equal(ids2, ids.numpy()), chunk

def test_prepare_text_gives_cached_ids_without_copies(text):
    "prepare_text keeps its signature and results; the ids are small integers, and training uses them where they are."
    from charrnn.batching import StreamBatcher
    from charrnn.model import CharModel, ModelConfig
    from charrnn.training import Learner, TrainConfig
    for run in range(2):  # encoded, then from the cache
        vocab, train_ids, val_ids, corpus = prepare_text(text)
        assert corpus == dict(name='text', path=str(text), sha256=TS_SHA256, chars=1_115_394, vocab_size=65)
        assert (len(train_ids), len(val_ids), train_ids.dtype) == (1_003_855, 111_539, torch.uint8)
        assert torch.equal(torch.cat([train_ids, val_ids]), plain(text)[1])
    learn = Learner(CharModel(vocab, ModelConfig(hidden=8, layers=1)), train_ids, val_ids, TrainConfig(batch_size=4, seq_len=8))
    assert learn.train_ids.data_ptr() == train_ids.data_ptr()  # .to('cpu') does not copy
    b = StreamBatcher(learn.train_ids, 4, 8)
    assert b.x.dtype == torch.uint8 and b.x.untyped_storage().data_ptr() == train_ids.untyped_storage().data_ptr()

def test_an_unwritable_cache_costs_only_time(text, monkeypatch, tmp_path):
    (tmp_path/'a-file').write_text('not a folder')
    monkeypatch.setenv('CHARRNN_CACHE', str(tmp_path/'a-file'/'cache'))
    vocab, ids, sha = text_ids(text)
    assert sha == TS_SHA256 and torch.equal(ids, plain(text)[1])

PEAK = '''
import re, sys
from charrnn.data import text_ids
def status(key): return int(re.search(key + r':\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) * 1024
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the memory in use now, after the imports
base = status('VmRSS')
vocab, ids, sha = text_ids(sys.argv[1])
print(len(ids), base, status('VmHWM'))
'''

@pytest.mark.skipif(not os.access('/proc/self/clear_refs', os.W_OK), reason='needs Linux /proc/self/clear_refs to reset the peak')
def test_preparing_a_big_text_costs_about_a_byte_per_character(tmp_path):
    "30 MB of text (the complete works, repeated): preparing it raises the peak memory by about the ids' size, not 24× it."
    body = (SHARED_DATA/'shakespeare.txt').read_bytes()
    with open(p := tmp_path/'big.txt', 'wb') as f:
        for _ in range(6): f.write(body)
    env = {**os.environ, 'CHARRNN_CACHE': str(tmp_path/'cache'), 'OMP_NUM_THREADS': '1'}
    for run in ('encoded', 'cached'):
        r = subprocess.run([sys.executable, '-c', PEAK, str(p)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        n, base, peak = map(int, r.stdout.split())
        assert n == 6 * len(body)
        print(f"{run}: {n / 1e6:.0f} M characters, peak memory {(peak - base) / 1e6:.0f} MB above the {base / 1e6:.0f} MB in use before")
        assert peak - base < 2 * n + 64e6, (run, peak - base)  # ids (1 byte a character) plus a piece; reading it whole took 24
        assert run == 'cached' or peak - base > n // 2  # the measure sees the ids: the encoded ones are all in memory
