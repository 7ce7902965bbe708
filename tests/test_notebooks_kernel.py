"""Every notebook in nbs/ runs top to bottom under a real Jupyter kernel (nbclient, the `python3`
ipykernel, cwd nbs/), the way a reader runs it -- not only in nbdev_test's in-process shell.

The cells nbdev_test skips are skipped the same way, with nbdev's own directive parsing: cells
flagged with a flag from settings.ini's `tst_flags` (`#| slow`), `#| eval: false` cells, cells
calling `nbdev_export()`, and whole notebooks with `skip_exec: true` in their front matter or a
kernel that is not Python. Markdown and raw cells are not run. As under nbdev_test, IN_TEST=1.

One test per notebook found in nbs/ (nothing is listed here), so a failure names it. The notebooks need
nothing outside the clone (tiny Shakespeare ships with the package). MPLBACKEND=Agg, OMP_NUM_THREADS=1 unless set
(one torch thread, as tools/test.sh runs nbdev_test); CHARRNN_NB_TIMEOUT sets the per-cell time limit in seconds
(default 1800).
"""
from __future__ import annotations

import os, re, time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = REPO/'nbs'


def notebooks() -> list[Path]:
    return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))


def skip_flags() -> set[str]:
    "settings.ini's tst_flags, read by nbdev as nbdev_test reads them."
    from nbdev.config import get_config
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        return set(get_config().get('tst_flags', '').split())
    finally: os.chdir(cwd)


def cells_to_run(nb_path:Path, flags:set[str]):
    """(frontmatter, python?, code cells nbdev_test runs), from nbdev's own processing of the notebook
    (`NBProcessor` with `FrontmatterProc`, and the rules of nbdev.test.test_nb's `_no_eval`)."""
    from nbdev.process import NBProcessor, nb_lang
    from nbdev.frontmatter import FrontmatterProc
    nb = NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb
    fm = getattr(nb, 'frontmatter_', {}) or {}
    def no_eval(cell):
        if cell.cell_type != 'code': return True
        if 'nbdev_export' + '(' in cell.source: return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return bool(flags & direc.keys())
    return fm, nb_lang(nb) == 'python', [c for c in nb.cells if not no_eval(c)]


@pytest.fixture(scope='module', autouse=True)
def notebook_env():
    "The environment the kernels inherit."
    old = dict(os.environ)
    os.environ['MPLBACKEND'] = 'Agg'
    os.environ['IN_TEST'] = '1'
    os.environ.setdefault('OMP_NUM_THREADS', '1')   # as tools/test.sh runs nbdev_test: one torch thread per notebook
    pp = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = str(REPO) + (os.pathsep + pp if pp else '')   # the checkout's charrnn, as nbdev_test's basepath
    yield
    os.environ.clear()
    os.environ.update(old)


@pytest.mark.parametrize('nb_path', notebooks(), ids=lambda p: p.name)
def test_notebook_runs_in_kernel(nb_path):
    import nbformat
    from fastcore.basics import str2bool
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    fm, is_python, cells = cells_to_run(nb_path, skip_flags())
    if str2bool(fm.get('skip_exec', False)): pytest.skip(f'{nb_path.name}: skip_exec in its front matter')
    if not is_python: pytest.skip(f'{nb_path.name}: not a Python notebook')
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(c.source) for c in cells]
    client = NotebookClient(nb, kernel_name='python3', timeout=int(os.environ.get('CHARRNN_NB_TIMEOUT', 1800)),
                            startup_timeout=120, resources={'metadata': {'path': str(NBS)}})
    t, err = time.time(), None
    try: client.execute()
    except CellExecutionError as e: err = re.sub(r'\x1b\[[0-9;]*m', '', str(e))
    if err: pytest.fail(f'{nb_path.name} failed under a Jupyter kernel:\n{err}', pytrace=False)
    print(f'\n{nb_path.name}: {len(cells)} cells in {time.time()-t:.1f}s')
