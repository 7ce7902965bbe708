"""Every notebook in nbs/ runs top to bottom under a real Jupyter kernel (nbclient, the `python3`
ipykernel, cwd nbs/), the way a reader runs it -- not only in nbdev_test's in-process shell.

The cells nbdev_test skips are skipped here too, as nbdev itself decides: `cells_to_run` calls nbdev's
`test_nb` with a shell that records the cells it is given instead of running them (cells flagged with
settings.ini's `tst_flags` such as `#| slow`, `#| eval: false` cells, cells calling `nbdev_export()`, and
whole notebooks with `skip_exec: true` or a kernel that is not Python are left out). As under nbdev_test,
IN_TEST=1.

One test per notebook found in nbs/ (nothing is listed here), so a failure names it. The notebooks need
nothing outside the clone (tiny Shakespeare ships with the package). MPLBACKEND=Agg, OMP_NUM_THREADS=1 unless
set (one torch thread, as tools/test.sh runs nbdev_test); CHARRNN_NB_TIMEOUT sets the per-cell time limit in
seconds (default 1800).
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


class CellRecorder:
    "Stands in for execnb's `CaptureShell` inside `nbdev.test.test_nb`: keeps the cells nbdev_test would run."
    cells = None

    def __init__(self, *args, **kwargs): pass

    def run_all(self, nb, exc_stop=False, preproc=lambda cell: False, **kwargs):
        "What nbdev_test's shell is given: the notebook, and nbdev's own rule (`preproc`) for cells it skips."
        type(self).cells = [c for c in nb.cells if not preproc(c)]


def cells_to_run(nb_path:Path, flags:set[str]) -> list | None:
    """The code cells nbdev_test runs in `nb_path` (None: it runs none, for `skip_exec` or a kernel that is
    not Python), decided by nbdev itself: its public `test_nb`, with a shell that records the cells instead
    of running them. nbdev 2.4.14 keeps the rule in a function inside `test_nb`: no other public way."""
    from unittest.mock import patch
    from nbdev.test import test_nb
    CellRecorder.cells = None
    with patch('nbdev.test.CaptureShell', CellRecorder), patch.dict(os.environ):  # test_nb sets IN_TEST
        test_nb(nb_path, skip_flags=flags, showerr=False)
    return CellRecorder.cells


@pytest.fixture(scope='module', autouse=True)
def notebook_env():
    "The environment the kernels inherit."
    old = dict(os.environ)
    os.environ['MPLBACKEND'] = 'Agg'
    os.environ['IN_TEST'] = '1'
    os.environ.setdefault('OMP_NUM_THREADS', '1')   # as nbdev_test runs here: one torch thread per notebook
    pp = os.environ.get('PYTHONPATH')
    # the checkout's charrnn, as nbdev_test's basepath
    os.environ['PYTHONPATH'] = str(REPO) + (os.pathsep + pp if pp else '')
    yield
    os.environ.clear()
    os.environ.update(old)


@pytest.mark.parametrize('nb_path', notebooks(), ids=lambda p: p.name)
def test_notebook_runs_in_kernel(nb_path):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    cells = cells_to_run(nb_path, skip_flags())
    if cells is None: pytest.skip(f'{nb_path.name}: nbdev_test runs none of it (skip_exec, or not Python)')
    kernel = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': kernel})
    nb.cells = [nbformat.v4.new_code_cell(c.source) for c in cells]
    timeout = int(os.environ.get('CHARRNN_NB_TIMEOUT', 1800))
    client = NotebookClient(nb, kernel_name='python3', timeout=timeout, startup_timeout=120,
                            resources={'metadata': {'path': str(NBS)}})
    t = time.time()
    err = None
    try: client.execute()
    except CellExecutionError as e: err = re.sub(r'\x1b\[[0-9;]*m', '', str(e))
    if err: pytest.fail(f'{nb_path.name} failed under a Jupyter kernel:\n{err}', pytrace=False)
    print(f'\n{nb_path.name}: {len(cells)} cells in {time.time()-t:.1f}s')
