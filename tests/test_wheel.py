"""The package as a user gets it (issue 12): build the wheel, check what it holds, install it into a fresh
venv, and run it from a folder outside the repository with no network.

- The wheel is built from a copy of the working tree (the files git tracks or would track: what a clone has,
  plus uncommitted work), with `pip wheel . --no-deps --no-build-isolation` (setuptools comes with torch and
  nbdev, so nothing is fetched), so a `build/` folder left in the checkout can never leak stale files into it.
- It holds every module of the checkout, the bundled model and the embedded tiny-Shakespeare corpus, nothing
  outside `charrnn/` and its metadata, and no notebook, test or run folder; it is smaller than 10 MB.
- The fresh venv comes from the base Python (`python -m venv --without-pip`), not from `.venv`. It sees the
  already-installed torch the honest way: a `.pth` file adds one folder of links to exactly the distributions
  that charrnn's `install_requires` need (read from their metadata, recursively), and nothing else from
  `.venv` (not charrnn's editable install, not nbdev or pytest). `.venv`'s pip installs the wheel into it with
  `--no-index`, so the install also proves the declared requirements are met without a download.
- In that venv, from an empty folder outside the repo, with HOME and CHARRNN_CACHE empty and every network
  connection refused (conftest's `sitecustomize`): `charrnn generate --seed 1` (the bundled model),
  `charrnn train tinyshakespeare --max-steps 20 ...` on a tiny model, `charrnn generate` from that run, and
  `python -c "import charrnn ..."` (the installed copy, the corpus unpacked from the wheel and checked).

Sizes and times are printed (`pytest -s` shows them).
"""
from __future__ import annotations

import gzip, hashlib, os, re, shutil, subprocess, sys, time, zipfile
from pathlib import Path

import pytest

from conftest import NO_NETWORK, TINY

REPO = Path(__file__).resolve().parents[1]
TS_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
MAX_WHEEL_BYTES = 10 * 1024 * 1024
# what may never be in the wheel: notebooks, tests, run folders, docs, the dev tools, the benchmarks
FORBIDDEN = re.compile(r'(\.ipynb$|(^|/)(nbs|tests?|runs|_docs|_proc|tools|bench|\.ipynb_checkpoints)/'
                       r'|(^|/)conftest\.py$)')


def source_files() -> list[str]:
    "The working tree's files as a clone would have them: tracked or not ignored, and present."
    r = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=REPO, capture_output=True,
                       check=True)
    return [f for f in r.stdout.decode().split('\0') if f and (REPO/f).is_file()]


def runtime_closure(name:str='charrnn') -> list:
    "The installed distributions `name` needs at run time (its install_requires, recursively), not `name`."
    import importlib.metadata as md
    from packaging.requirements import Requirement
    seen = set()
    todo = [name]
    dists = []
    while todo:
        req = todo.pop()
        key = re.sub(r'[-_.]+', '-', req).lower()
        if key in seen: continue
        seen.add(key)
        dist = md.distribution(req)
        if key != name: dists.append(dist)
        for r in map(Requirement, dist.requires or []):
            if r.marker is None or r.marker.evaluate({'extra': ''}): todo.append(r.name)
    return dists


def link_dists(dists, dest:Path) -> list[str]:
    "Symlink each distribution's top-level files and folders (package, metadata, bundled libs) into `dest`."
    dest.mkdir(parents=True)
    tops = {}
    for d in dists:
        for f in d.files or []:
            top = Path(f).parts[0]
            if top in ('..', '__pycache__') or top.endswith('.pth'): continue
            tops[top] = Path(d.locate_file(top))
    for top, src in sorted(tops.items()):
        assert src.exists(), f'{src} is listed in an installed distribution but missing'
        (dest/top).symlink_to(src)
    return sorted(tops)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, errors='replace',
                       stdin=subprocess.DEVNULL, **kw)
    assert p.returncode == 0, (f"$ {' '.join(map(str, cmd))}\nexit status {p.returncode}\n"
                               f"--- stdout ---\n{p.stdout[-3000:]}\n--- stderr ---\n{p.stderr[-6000:]}")
    return p


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    "The wheel, built from a copy of the working tree."
    tmp = tmp_path_factory.mktemp('wheel')
    src, out = tmp/'src', tmp/'dist'
    for f in source_files():
        (src/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO/f, src/f)
    t = time.time()
    run([sys.executable, '-m', 'pip', 'wheel', '.', '--no-deps', '--no-build-isolation', '--no-index', '-q',
         '-w', out], cwd=src, env={**os.environ, 'PIP_DISABLE_PIP_VERSION_CHECK': '1'}, timeout=600)
    whl, = out.glob('charrnn-*.whl')
    print(f'\nbuilt {whl.name} in {time.time()-t:.1f}s: {whl.stat().st_size/1e6:.2f} MB')
    return whl


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    size = wheel.stat().st_size
    print(f'\n{wheel.name}: {size:,} bytes ({size/2**20:.2f} MiB), {len(names)} files')
    assert size < MAX_WHEEL_BYTES, f'{wheel.name} is {size/2**20:.2f} MiB: the wheel must stay under 10 MiB'
    def ours(n): return n.startswith('charrnn/') or re.match(r'charrnn-[^/]+\.dist-info/', n)
    outside = [n for n in names if not ours(n)]
    assert not outside, f'files outside the package in the wheel: {outside}'
    bad = [n for n in names if FORBIDDEN.search(n)]
    assert not bad, f'notebooks, tests, run folders or dev tools in the wheel: {bad}'
    modules = sorted(f for f in source_files() if re.fullmatch(r'charrnn/[^/]+\.py', f))
    missing = sorted(set(modules) - set(names))
    assert modules and not missing, f'modules missing from the wheel: {missing}'
    models = [n for n in names if re.fullmatch(r'charrnn/models/[^/]+\.safetensors', n)]
    assert models, 'the bundled model (charrnn/models/*.safetensors) is not in the wheel'
    assert 'charrnn/corpora/tinyshakespeare.txt.gz' in names, 'the embedded tiny Shakespeare is not in it'
    text = gzip.decompress(zipfile.ZipFile(wheel).read('charrnn/corpora/tinyshakespeare.txt.gz'))
    assert hashlib.sha256(text).hexdigest() == TS_SHA256, "the wheel's tiny Shakespeare is not the known file"
    sizes = {i.filename: i.compress_size for i in zipfile.ZipFile(wheel).infolist()}
    largest = sorted(sizes.items(), key=lambda o: -o[1])[:3]
    print('largest: ' + ', '.join(f'{n} {s/1e6:.2f} MB' for n, s in largest))


@pytest.fixture(scope='module')
def venv(wheel, tmp_path_factory) -> Path:
    "A fresh venv from the base Python, seeing only charrnn's run-time needs from `.venv`, the wheel in it."
    tmp = tmp_path_factory.mktemp('venv')
    v, deps = tmp/'venv', tmp/'deps'
    t0 = time.time()
    base = os.path.realpath(getattr(sys, '_base_executable', sys.executable))
    run([base, '-m', 'venv', '--without-pip', v], timeout=300)
    tops = link_dists(runtime_closure(), deps)
    vpy = v/'bin'/'python'
    site = run([vpy, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout.strip()
    (Path(site)/'charrnn_test_deps.pth').write_text(f'{deps}\n')
    t1 = time.time()
    pip = [sys.executable, '-m', 'pip', '--python', vpy]
    run([*pip, 'install', '--no-index', '--no-cache-dir', '-q', wheel],
        env={**os.environ, 'PIP_DISABLE_PIP_VERSION_CHECK': '1'}, timeout=600)
    t2 = time.time()
    print(f'\nfresh venv with {len(tops)} linked entries of the run-time requirements in {t1-t0:.1f}s; '
          f'wheel installed (--no-index) in {t2-t1:.1f}s')
    return v


@pytest.fixture(scope='module')
def user(venv, tmp_path_factory):
    """Run a command as a user of the installed wheel: its venv first on PATH, an empty folder outside the
    repo, no network."""
    home = tmp_path_factory.mktemp('user')
    for d in ('pypath', 'work', 'cache'): (home/d).mkdir()
    (home/'pypath'/'sitecustomize.py').write_text(NO_NETWORK)
    env = dict(PATH=f"{venv/'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin", HOME=str(home), LANG='C.UTF-8',
               LC_ALL='C.UTF-8', PYTHONPATH=str(home/'pypath'), PYTHONNOUSERSITE='1',
               PYTHONDONTWRITEBYTECODE='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg',
               CHARRNN_CACHE=str(home/'cache'))
    def call(*args, timeout=300):
        t = time.time()
        p = run(args, env=env, cwd=home/'work', timeout=timeout)
        cmd = ' '.join(map(str, args)).replace('\n', '; ')
        print(f"\n$ {cmd[:100] + ('...' if len(cmd) > 100 else '')}  ({time.time()-t:.1f}s)")
        return p
    call.home = home
    return call


def test_import_the_installed_package(user, venv):
    code = ("import charrnn, socket; from pathlib import Path\n"
            "from charrnn.data import resolve_text_path, file_sha256\n"
            "from charrnn.checkpoint import bundled_model\n"
            "print(Path(charrnn.__file__).resolve())\n"
            "p = resolve_text_path('tinyshakespeare'); print(p, file_sha256(p))\n"
            "m = bundled_model(); print(type(m).__name__, m.summary.get('best_val_loss'))\n"
            "try: socket.create_connection(('example.com', 80), timeout=1); print('NETWORK')\n"
            "except OSError: print('no network')\n")
    out = user('python', '-c', code).stdout.splitlines()
    assert Path(out[0]).is_relative_to(venv.resolve()), f'charrnn was imported from {out[0]}, not the venv'
    path, sha = out[1].rsplit(' ', 1)
    assert sha == TS_SHA256 and Path(path).is_relative_to(user.home/'cache'), out[1]
    assert out[2].startswith('CharModel '), out[2]
    assert out[-1] == 'no network', 'the no-network guard is not in place'


def test_generate_from_the_bundled_model(user):
    out = user('charrnn', 'generate', '--seed', '1').stdout
    assert len(out) > 100 and re.search(r'[A-Za-z]{3}', out), f'not a sample: {out!r}'


def test_train_tinyshakespeare_then_generate(user):
    run_dir = user.home/'work'/'runs'/'tiny'
    user('charrnn', 'train', 'tinyshakespeare', '--max-steps', 20, '--eval-every', 10, '--val-frac', 0.01,
         *TINY, '--out', run_dir, timeout=600)
    files = sorted(p.name for p in run_dir.iterdir())
    assert list(run_dir.glob('*.safetensors')), f'no checkpoint in {run_dir}: {files}'
    out = user('charrnn', 'generate', run_dir, '--length', 200, '--seed', 1).stdout
    assert len(out) >= 150, f'not a 200-character sample: {out!r}'
