"""The generation lesson where students use it: in a real JupyterLab, in a real browser.

The test starts `jupyter lab` itself, on 127.0.0.1 with a random token, serving a temporary copy of
`nbs/04_generation.ipynb` (every Jupyter and JupyterLab settings folder in the temporary folder too, so
nothing in the user's home changes). Headless Chromium (Debian's /usr/bin/chromium, through Playwright) opens
the lesson, runs every cell above the explorer and then the explorer's cell, drags the temperature slider, and
checks that the sample the explorer shows changes. A screenshot goes to
tests/artifacts/jupyterlab_explorer.png. A second, quick test checks that the explorer's saved output shows as
HTML where no kernel runs (the docs site).

The server is stopped by its own process id when the test ends, pass or fail (its process group, then any
process it started that is still alive, such as the kernel). Every wait is on a condition, with a generous
limit: the test machines have two busy cores. Chromium missing is a failure, not a skip, as in
tests/test_docs_site.py.
"""
from __future__ import annotations

import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LESSON = REPO/'nbs'/'04_generation.ipynb'
ARTIFACTS = REPO/'tests'/'artifacts'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
EXPLORER_CELL = 'Explorer(model)'   # the source of the lesson's explorer cell
MINUTE = 60_000                     # Playwright's limits are in milliseconds


def _chromium_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return (f'{CHROMIUM} is missing: the JupyterLab test needs Chromium. Install it with '
                '`apt-get install -y chromium chromium-driver` (.ci/run does this).')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _stop(proc:subprocess.Popen):
    "Stop the server: SIGTERM to its process group (it stops its kernels), then SIGKILL, then its children."
    import psutil
    try: children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess: children = []
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if proc.poll() is not None: break
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: break
        try: proc.wait(wait)
        except subprocess.TimeoutExpired: pass
    _, alive = psutil.wait_procs(children, timeout=10)   # the kernel runs in a session of its own
    for p in alive:
        try: p.kill()
        except psutil.NoSuchProcess: pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def lab(tmp_path):
    "A running JupyterLab serving a copy of the generation lesson: (base URL, token)."
    if (msg := _chromium_missing()): pytest.fail(msg, pytrace=False)
    root = tmp_path/'nbs'
    home = tmp_path/'home'
    root.mkdir()
    home.mkdir()
    shutil.copy2(LESSON, root/LESSON.name)
    settings = home/'lab-settings'
    # no toasts over the notebook: the news prompt and update checks are off, as a user would have set them
    (settings/'@jupyterlab'/'apputils-extension').mkdir(parents=True)
    (settings/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings').write_text(
        json.dumps({'fetchNews': 'false', 'checkForUpdates': False, 'doNotDisturbMode': True}))
    env = {**os.environ, 'HOME': str(home), 'JUPYTER_CONFIG_DIR': str(home/'config'),
           'JUPYTER_DATA_DIR': str(home/'data'), 'JUPYTER_RUNTIME_DIR': str(home/'runtime'),
           'JUPYTERLAB_SETTINGS_DIR': str(settings),
           'JUPYTERLAB_WORKSPACES_DIR': str(home/'workspaces'), 'IPYTHONDIR': str(home/'ipython'),
           'MPLCONFIGDIR': str(home/'mpl'), 'OMP_NUM_THREADS': '1', 'JUPYTER_PLATFORM_DIRS': '1'}
    env.pop('MPLBACKEND', None)   # the kernel plots inline, as in a student's JupyterLab
    env.pop('JUPYTER_PORT', None)
    token, port = secrets.token_hex(16), _free_port()
    cmd = [str(Path(sys.executable).parent/'jupyter-lab'), '--no-browser', '--ServerApp.ip=127.0.0.1',
           f'--ServerApp.port={port}', '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}',
           f'--ServerApp.root_dir={root}', '--LabApp.expose_app_in_browser=True', '--LabApp.news_url=None',
           '--LabApp.extension_manager=readonly']
    if os.geteuid() == 0: cmd.append('--allow-root')
    log = open(tmp_path/'jupyter-lab.log', 'w')
    # its own process group, so that it can be stopped as a whole
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base, t0 = f'http://127.0.0.1:{port}', time.time()
        while True:
            if proc.poll() is not None:
                log_tail = (tmp_path/'jupyter-lab.log').read_text()[-4000:]
                pytest.fail(f'jupyter lab exited with status {proc.returncode}:\n{log_tail}')
            try:
                with urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=10) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() - t0 > 300:
                log_tail = (tmp_path/'jupyter-lab.log').read_text()[-4000:]
                pytest.fail(f'jupyter lab did not answer in 300 s:\n{log_tail}')
            time.sleep(0.5)
        print(f'\njupyter lab (pid {proc.pid}) answered on {base} after {time.time() - t0:.1f}s')
        yield base, token
    finally:
        _stop(proc)
        log.close()
        assert proc.poll() is not None, f'jupyter lab (pid {proc.pid}) is still running'


# JupyterLab's own objects (exposed by --LabApp.expose_app_in_browser): the open notebook and its cells.
_NB = 'window.jupyterapp && window.jupyterapp.shell.currentWidget'
_SELECT_JS = """(src) => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const i = nb.widgets.findIndex(c => c.model.sharedModel.getSource().trim() === src);
  if (i < 0) return -1;
  nb.activeCellIndex = i;
  nb.deselectAll();
  nb.widgets[i].node.dataset.charrnnTest = 'explorer';   // a handle on its DOM node for the locators below
  return i;
}"""
_ERRORS_JS = """() => window.jupyterapp.shell.currentWidget.content.widgets.flatMap(c =>
  c.model.type === 'code' ? c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                 .map(o => `${o.ename}: ${o.evalue}`) : [])"""


def run(page, command:str, minutes:float=15):
    "Run a JupyterLab notebook command (as its menu entry does); wait until the cells it runs have finished."
    page.evaluate("""(cmd) => { window.__charrnnDone = null;
        window.jupyterapp.commands.execute(cmd).then(ok => window.__charrnnDone = String(ok),
            e => window.__charrnnDone = 'error: ' + e); }""", command)
    page.wait_for_function('() => window.__charrnnDone !== null', timeout=minutes * MINUTE)
    done = page.evaluate('() => window.__charrnnDone')
    assert done == 'true', f'{command} did not finish cleanly: {done}'


def test_explorer_in_jupyterlab(lab):
    if (msg := _chromium_missing()): pytest.fail(msg, pytrace=False)
    from playwright.sync_api import expect, sync_playwright
    base, token = lab
    t0 = time.time()
    stage = lambda what: print(f'{time.time() - t0:6.1f}s  {what}')
    with sync_playwright() as p:
        browser, page = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS), None
        try:
            ctx = browser.new_context(viewport={'width': 1400, 'height': 1000})
            outside = []
            ctx.route('**/*', lambda r: r.continue_() if r.request.url.startswith(base)
                      else (outside.append(r.request.url), r.abort()))
            page = ctx.new_page()
            page.goto(f'{base}/lab/tree/{LESSON.name}?token={token}', wait_until='load', timeout=5 * MINUTE)
            page.wait_for_function(f'() => {_NB} && {_NB}.content && {_NB}.content.widgets.length > 10',
                                   timeout=5 * MINUTE)
            idle = f'() => {_NB}.sessionContext.session?.kernel?.status === "idle"'
            page.wait_for_function(idle, timeout=5 * MINUTE)
            stage('the lesson is open and its kernel is idle')

            idx = page.evaluate(_SELECT_JS, EXPLORER_CELL)
            assert idx > 0, f'the lesson has no cell whose source is {EXPLORER_CELL!r}'
            run(page, 'notebook:run-all-above')
            errors = page.evaluate(_ERRORS_JS)
            assert not errors, f'cells above the explorer failed in JupyterLab: {errors}'
            stage(f'ran the {idx} cells above the explorer')
            run(page, 'notebook:run-cell')
            errors = page.evaluate(_ERRORS_JS)
            assert not errors, f'the explorer cell failed in JupyterLab: {errors}'

            cell = page.locator('[data-charrnn-test=explorer]')
            # the live widget, not the saved output
            sample = cell.locator('.widget-html-content pre.charrnn-sample')
            sample.wait_for(timeout=5 * MINUTE)
            slider = cell.locator('.widget-slider', has=page.locator('label', has_text='temperature'))
            readout = slider.locator('.widget-readout')
            before, start = sample.inner_text(), readout.inner_text()
            assert before.startswith('ROMEO:\nI will') and len(before) > 100, before
            stage(f'the explorer shows a sample at temperature {start}')

            handle = slider.locator('.noUi-handle')
            handle.scroll_into_view_if_needed()
            box, track = handle.bounding_box(), slider.locator('.noUi-target').bounding_box()
            page.mouse.move(box['x'] + box['width'] / 2, box['y'] + box['height'] / 2)
            page.mouse.down()
            page.mouse.move(track['x'] + track['width'] * 0.75, box['y'] + box['height'] / 2, steps=10)
            page.mouse.up()
            # the widget redraws its HTML: a new <pre>
            expect(sample).not_to_have_text(before, timeout=5 * MINUTE)
            after, moved = sample.inner_text(), readout.inner_text()
            stage(f'dragged the temperature from {start} to {moved}: the sample changed')
            assert moved != start and float(moved) > float(start), (start, moved)
            assert after.startswith('ROMEO:\nI will') and after != before
            assert not (errors := page.evaluate(_ERRORS_JS)), errors

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            out = ARTIFACTS/'jupyterlab_explorer.png'
            cell.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(out))
            assert out.is_file() and out.stat().st_size > 0
            stage(f'screenshot: {out.relative_to(REPO)}')
            if outside: print(f'requests outside 127.0.0.1, blocked: {sorted(set(outside))}')
        except Exception:
            if page is None: raise
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS/'jupyterlab_explorer_failed.png'))
            print(f'screenshot of the failure: tests/artifacts/jupyterlab_explorer_failed.png')
            raise
        finally:
            browser.close()
    print(f'wall time in the browser: {time.time() - t0:.1f}s')


def test_explorer_has_a_static_view():
    "Where no kernel runs (the docs site: no widget code), the explorer's saved output shows as HTML."
    import nbformat
    sys.path.insert(0, str(REPO/'tools'))
    try: import build_docs
    finally: sys.path.remove(str(REPO/'tools'))
    nb = nbformat.read(LESSON, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == 'code' and c.source.strip() == EXPLORER_CELL)
    assert any('text/html' in o.get('data', {}) for o in cell.outputs), (
        f'the explorer cell of {LESSON.name} has no saved view: run the notebook')
    body, _ = build_docs.exporter().from_notebook_node(build_docs.prepare_nb(nb))
    assert '<div class="charrnn-explorer">' in body and 'class="charrnn-sample"' in body, (
        f'the docs page of {LESSON.name} does not show the explorer as HTML (the text/html of '
        '`Explorer._repr_mimebundle_`, which tools/build_docs.py shows in place of the widget view)')
