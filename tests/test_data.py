"""Named corpora (charrnn.data, issue 12): the embedded tiny Shakespeare and the verified download of `shakespeare`.

The embedded copy: it unpacks to the exact bytes of ../shared/data/tinyshakespeare.txt, and `charrnn train
tinyshakespeare` works with no network, no CHARRNN_DATA and an empty cache. The download: a local HTTP server on
127.0.0.1 serves ../shared/data (and a copy of the complete works with one byte changed); `CHARRNN_SHAKESPEARE_URL`
points the corpus at it. A good download is cached and reused; a corrupted one, a 404 and a dead port are each one
line (`charrnn train: error: ...`, exit status 2) and leave nothing in the cache. Each case runs through the library
(fast) and through the real `charrnn train` console script (fixtures in conftest.py).
"""
from __future__ import annotations

import gzip, hashlib, http.server, socket, threading
from functools import partial
from pathlib import Path

import pytest

from charrnn.data import CORPORA, CORPORA_DIR, DownloadError, cache_dir, file_sha256, get_corpus, resolve_text_path
from conftest import TINY, assert_user_error, checkpoint_summary

SHARED_DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'  # CI has ../shared beside the clone
TS_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
SH_SHA256 = '582d1c5e8bb8b9d0ad266dbb36b3d87e6380d909d5d73087d1dc227574bc4ebd'
SHORT = [*TINY, '--max-steps', '2', '--eval-every', '2', '--val-frac', '0.01']  # 2 steps, validating on 1% only


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
    assert [p.name for p in cache_dir.iterdir()] == ['tinyshakespeare.txt']
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
    assert [p.name for p in cache_dir.iterdir()] == ['shakespeare.txt']
    assert (cache_dir/'shakespeare.txt').read_bytes() == (SHARED_DATA/'shakespeare.txt').read_bytes()
    corpus = checkpoint_summary(tmp_path/'run1'/'best.safetensors')['corpus']
    assert corpus['sha256'] == SH_SHA256 and corpus['name'] == 'shakespeare', corpus
    # the server now answers 404: the checked copy in the cache is used, and nothing is fetched
    r = run_cli('train', 'shakespeare', '--out', tmp_path/'run2', *SHORT, env=download_env(cache_dir, f'{base}/gone.txt'))
    assert r.returncode == 0, r
    assert srv.requests == ['/shakespeare.txt']
    assert [p.name for p in cache_dir.iterdir()] == ['shakespeare.txt']

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
