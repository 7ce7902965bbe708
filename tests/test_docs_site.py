"""The docs site, in a real browser: build it with `tools/build_docs.py`, serve `_docs/` on
127.0.0.1 and open every page in headless Chromium (Playwright, /usr/bin/chromium).

Every page is covered, and the pages are found from the notebooks present (nothing is listed here):
- every page loads with no console error, failed request or request leaving 127.0.0.1;
- every notebook has its page, and every page's sidebar lists every page, in two sections:
  "Lessons" (the `0*` notebooks) and "Engine" (the `1*` notebooks), each in file-name order, after the home
  page;
- every lesson page shows at least one rendered plot, and every page shows every image its notebook's
  visible outputs hold (rendered: loaded, with a size);
- every exported function and class has its API entry (the anchor nbdev's `_modidx.py` links to) and
  every other exported name appears on some page;
- every internal link and #anchor on every page resolves.
A screenshot of the training lesson (or of the last lesson) is saved in tests/artifacts/.

Chromium missing is a failure, not a skip: `tools/setup_env.sh` installs it (Debian's chromium).
"""
from __future__ import annotations

import functools, http.server, importlib, json, os, re, subprocess, sys, threading, time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = REPO/'nbs'
DOCS = REPO/'_docs'
ARTIFACTS = REPO/'tests'/'artifacts'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
SECTIONS = {'Lessons': '0', 'Engine': '1'}   # sidebar section -> the first character of its notebooks' names
IMAGE_MIMES = ('image/png', 'image/jpeg', 'image/svg+xml', 'image/gif')


def page_name(nb:Path) -> str:
    "The page Quarto (and tools/build_docs.py) makes from a notebook: `00_encoding.ipynb` -> `encoding.html`."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(nb.relative_to(NBS)).as_posix()


def notebooks() -> list[Path]:
    return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))


def section(name:str) -> list[Path]:
    "The notebooks of a sidebar section, in file-name order."
    return [p for p in notebooks() if p.name.startswith(SECTIONS[name])]


def lessons() -> list[Path]:
    return section('Lessons')


def visible_image_outputs(nb_path:Path) -> int:
    "Image outputs of the cells nbdev keeps on the page (not `#| hide`, `#| export`, `include: false`, ...)."
    from nbdev.process import NBProcessor
    n = 0
    for cell in NBProcessor(nb_path, rm_directives=False).nb.cells:
        if cell.cell_type != 'code': continue
        d = cell.directives_ or {}
        if d.keys() & {'hide', 'export', 'exporti', 'default_exp'}: continue
        if d.get('include:') == ['false'] or d.get('output:') == ['false']: continue
        n += sum(any(m in o.get('data', {}) for m in IMAGE_MIMES) for o in cell.get('outputs', []))
    return n

# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope='module')
def built_site():
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    env.pop('IN_TEST', None)
    t = time.time()
    r = subprocess.run([sys.executable, 'tools/build_docs.py'], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, (f'tools/build_docs.py failed (rc {r.returncode}):\n{r.stdout[-4000:]}\n'
                               f'{r.stderr[-8000:]}')
    print(f'\nbuilt the docs site in {time.time()-t:.1f}s: {r.stdout.strip().splitlines()[-1]}')
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob('*.html'))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope='module')
def base_url(built_site):
    handler = functools.partial(_QuietHandler, directory=str(DOCS))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_port}/'
    server.shutdown()
    server.server_close()


def _chromium_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return (f'{CHROMIUM} is missing: the docs-site test needs Chromium. Install it with '
                '`apt-get install -y chromium chromium-driver` (.ci/run does this).')


@pytest.fixture(scope='module')
def browser():
    if (msg := _chromium_missing()): pytest.fail(msg, pytrace=False)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


_COLLECT_JS = """() => ({
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  links: [...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href]),
  plots: [...document.querySelectorAll('.cell-output-display img, .cell-output img')].map(i => ({
      w: i.naturalWidth, h: i.naturalHeight, complete: i.complete, src: i.getAttribute('src').slice(0, 30)})),
  sidebar: [...document.querySelectorAll('nav.sidebar a[href]')].map(a => a.href),
  sections: [...document.querySelectorAll('nav.sidebar .sidebar-section')].map(s => [
      s.querySelector('.sidebar-section-title').textContent.trim(),
      [...s.querySelectorAll('a[href]')].map(a => a.href)]),
  text: document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText,
  title: document.title,
})"""


@pytest.fixture(scope='module')
def crawl(built_site, base_url, browser):
    "Open every page once; what each showed and what went wrong loading it."
    ctx = browser.new_context(viewport={'width': 1280, 'height': 1000})
    outside = []
    def route(r):
        if r.request.url.startswith(base_url): r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()
    ctx.route('**/*', route)
    res = {}
    for name in built_site:
        page = ctx.new_page()
        problems = []
        page.on('console', lambda m, p=problems: m.type == 'error' and p.append(f'console error: {m.text}'))
        page.on('pageerror', lambda e, p=problems: p.append(f'page error: {e}'))
        page.on('requestfailed', lambda r, p=problems: p.append(f'request failed: {r.url} ({r.failure})'))
        page.on('response', lambda r, p=problems: r.status >= 400 and p.append(f'HTTP {r.status}: {r.url}'))
        n_outside = len(outside)
        resp = page.goto(base_url + name, wait_until='load')
        if resp is None or not resp.ok: problems.append(f'HTTP {resp and resp.status} loading the page')
        page.wait_for_timeout(100)   # late console messages
        info = page.evaluate(_COLLECT_JS)
        info['problems'] = problems + [f'fetched from outside: {u}' for u in outside[n_outside:]]
        res[name] = info
        page.close()
    ctx.close()
    return res

# ------------------------------------------------------------------ tests

def test_chromium_is_installed():
    assert not _chromium_missing(), _chromium_missing()


def test_pages_load_without_errors(crawl):
    bad = {name: info['problems'] for name, info in crawl.items() if info['problems']}
    assert not bad, 'pages with console errors or failed requests:\n' + json.dumps(bad, indent=1)


def test_every_notebook_has_a_page_in_every_sidebar(crawl, base_url):
    missing = [f'{nb.name} -> {page_name(nb)}' for nb in notebooks() if page_name(nb) not in crawl]
    assert not missing, f'notebooks without a page: {missing}'
    pages = {base_url + p for p in crawl}
    for name, info in crawl.items():
        listed = {u.split('#')[0] for u in info['sidebar']}
        assert pages <= listed, f'{name}: sidebar misses {sorted(pages - listed)}'
    stray = [nb.name for nb in notebooks()
             if nb.name != 'index.ipynb' and nb.name[0] not in SECTIONS.values()]
    assert not stray, f'notebooks in no sidebar section (name lessons 0*, engine chapters 1*): {stray}'
    want = [[name, [base_url + page_name(nb) for nb in section(name)]] for name in SECTIONS if section(name)]
    for name, info in crawl.items():
        assert info['sections'] == want, (f'{name}: the sidebar sections are not Lessons (0*) and Engine '
                                          f'(1*) in notebook order:\n{info["sections"]}\nexpected:\n{want}')
        first = info['sidebar'][0] if info['sidebar'] else None
        assert first == base_url + 'index.html', f'{name}: the sidebar starts with {first}, not the home page'


@pytest.mark.parametrize('nb_name', [nb.name for nb in notebooks()])
def test_page_plots_render(crawl, nb_name):
    "Every image a notebook's visible outputs hold renders on its page; every lesson shows at least one plot."
    nb = NBS/nb_name
    assert page_name(nb) in crawl, f'{nb_name} has no page {page_name(nb)}'
    info = crawl[page_name(nb)]
    rendered = [p for p in info['plots'] if p['complete'] and p['w'] > 0 and p['h'] > 0]
    broken = [p for p in info['plots'] if not (p['complete'] and p['w'] > 0)]
    assert not broken, f'{page_name(nb)}: images that did not render: {broken}'
    n_nb = visible_image_outputs(nb)
    if nb in lessons():
        assert n_nb, f'{nb.name} has no image output: every lesson shows a plot (run it and save its outputs)'
    assert len(rendered) >= n_nb, f"{page_name(nb)} shows {len(rendered)} of {nb.name}'s {n_nb} output images"


def _public_api():
    "(module, name, object, docs location from _modidx or None) for every name in each module's __all__."
    idx = importlib.import_module('charrnn._modidx').d
    res = []
    for mod, syms in idx['syms'].items():
        m = importlib.import_module(mod)
        locs = {k[len(mod)+1:]: loc for k, (loc, _) in syms.items()}
        names = list(getattr(m, '__all__', []))
        names += [n for n in locs if '.' not in n and not n.startswith('_') and n not in names]
        res += [(mod, n, getattr(m, n, None), locs.get(n)) for n in names]
    return res


def test_exported_functions_and_classes_have_api_docs(crawl):
    "Each exported function and class has the API entry (show_doc) that nbdev's _modidx.py links to."
    problems = []
    for mod, name, obj, loc in _public_api():
        if not (callable(obj) or isinstance(obj, type)): continue
        if loc is None:
            problems.append(f'{mod}.{name}: in __all__ but not in _modidx.py (run nbdev_export)')
            continue
        page, anchor = loc.split('#', 1) if '#' in loc else (loc, '')
        if page not in crawl: problems.append(f'{mod}.{name}: its page {page} was not built')
        elif anchor not in crawl[page]['ids']:
            problems.append(f'{mod}.{name}: no API entry #{anchor} on {page}')
    assert not problems, 'exported names without API docs:\n' + '\n'.join(problems)


def test_exported_constants_are_mentioned(crawl):
    "Exported names that are not functions or classes (show_doc skips them) appear in some page's text."
    text = '\n'.join(info['text'] for info in crawl.values())
    def shown(name): return re.search(rf'\b{re.escape(name)}\b', text)
    missing = [f'{mod}.{name}' for mod, name, obj, _ in _public_api()
               if not (callable(obj) or isinstance(obj, type)) and not shown(name)]
    assert not missing, ('exported (in __all__) but mentioned on no page; say what each is in the lesson\'s '
                         'prose, or keep it out of __all__ (`#| exporti`):\n' + '\n'.join(missing))


def test_internal_links_resolve(crawl, base_url):
    bad = []
    for name, info in crawl.items():
        for raw, url in info['links']:
            if not url.startswith(base_url): continue      # external: not fetched, not checked
            parts = urlsplit(url)
            path = unquote(parts.path)[len(urlsplit(base_url).path):] or 'index.html'
            if path.endswith('/'): path += 'index.html'
            if not (DOCS/path).is_file():
                bad.append(f'{name}: {raw!r} -> missing {path}')
                continue
            if parts.fragment and path in crawl and unquote(parts.fragment) not in crawl[path]['ids']:
                bad.append(f'{name}: {raw!r} -> no #{parts.fragment} on {path}')
    assert not bad, 'broken internal links:\n' + '\n'.join(sorted(set(bad)))


def test_screenshot_of_training_page(crawl, base_url, browser):
    training = [page_name(nb) for nb in lessons() if nb.stem.endswith('_training')]
    name = (training or [page_name(nb) for nb in lessons()] or sorted(crawl))[-1]
    assert name in crawl, f'{name} was not built'
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS/(Path(name).stem + '.png')
    page = browser.new_page(viewport={'width': 1280, 'height': 1000})
    try:
        page.goto(base_url + name, wait_until='load')
        height = min(page.evaluate('document.documentElement.scrollHeight'), 3000)
        page.screenshot(path=str(out), full_page=True, clip={'x': 0, 'y': 0, 'width': 1280, 'height': height})
    finally: page.close()
    assert out.is_file() and out.stat().st_size > 0, f'no screenshot at {out}'
    print(f'\nscreenshot of {name}: {out}')

# ------------------------------------------------------------------ the nbdev the docs rely on (fast)

def _tool(name:str):
    "A script of tools/ as a module."
    spec = importlib.util.spec_from_file_location(name, REPO/'tools'/f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_nbdev_the_docs_rely_on(tmp_path):
    """What tools/build_docs.py, tools/render_readme.py and tests/test_notebooks_kernel.py use of nbdev beyond
    its public API, each checked so that a change in nbdev fails here, naming what changed, not deep in a
    build."""
    import inspect, json, sys
    import nbdev.serve_drv, nbdev.test
    from nbdev.config import get_config
    sys.path.insert(0, str(REPO/'tests'))
    from test_notebooks_kernel import cells_to_run
    v = f'(nbdev {nbdev.__version__}; written for 2.4.14)'
    # 1. nbdev's FrontmatterProc names each notebook's page (`output-file`): build_docs.page_of
    cells = [{'cell_type': 'markdown', 'id': 'a', 'metadata': {}, 'source': ['# A title\n', '> what it is']},
             {'cell_type': 'code', 'id': 'b', 'metadata': {}, 'execution_count': None, 'outputs': [],
              'source': ['1 + 1']},
             {'cell_type': 'code', 'id': 'c', 'metadata': {}, 'execution_count': None, 'outputs': [],
              'source': ['#| slow\n', '2 + 2']},
             {'cell_type': 'code', 'id': 'd', 'metadata': {}, 'execution_count': None, 'outputs': [],
              'source': ['#| eval: false\n', '3 + 3']}]
    nb = tmp_path/'03b_some_page.ipynb'
    kernel = {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}
    meta = {'kernelspec': kernel}
    nb.write_text(json.dumps({'cells': cells, 'metadata': meta, 'nbformat': 4, 'nbformat_minor': 5}))
    page = _tool('build_docs').page_of(nb, tmp_path)
    assert page == 'some_page.html', f"nbdev's FrontmatterProc names the page {page!r} {v}"
    # 2. `nbdev.test.test_nb` hands its cells to execnb's CaptureShell(...).run_all(nb, preproc=...), which
    #    test_notebooks_kernel.cells_to_run replaces by a recorder to learn which cells nbdev_test runs
    assert 'CaptureShell' in vars(nbdev.test), f"nbdev.test no longer uses the name CaptureShell {v}"
    kept = cells_to_run(nb, {'slow'})
    assert kept is not None, f"nbdev.test.test_nb no longer calls CaptureShell(...).run_all {v}"
    assert [c.source for c in kept] == ['1 + 1'], f"nbdev.test.test_nb's preproc kept {kept} {v}"
    # 3. `nbdev.serve_drv.main((source, destination, processor))` processes one notebook: render_readme
    params = list(inspect.signature(nbdev.serve_drv.main).parameters)
    assert len(params) == 1, f"nbdev.serve_drv.main takes {params}, not one (src, dest, proc) tuple {v}"
    # 4. settings.ini keeps nbs/sidebar.yml ours: nbdev_sidebar (run by nbdev_docs) would rewrite it otherwise
    assert get_config().custom_sidebar, 'settings.ini keeps custom_sidebar = True: nbs/sidebar.yml is ours'
