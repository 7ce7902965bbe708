"""The clone stands alone (issue 19): nothing in the repository reads anything outside it.

A user's clone has nothing beside it, while the project's own machines once had a `../shared` folder that the
data tests read, so the suite passed there and failed on a fresh clone. Here the repository's files (those git
tracks, and new files it does not ignore: the tree as it is now, not as last committed) are copied to a
temporary folder with nothing beside it, and the data tests run there, in a subprocess whose `charrnn` is the
copy's. A second test scans the code for paths that lead out of the repository.
"""
from __future__ import annotations

import os, re, shutil, subprocess, sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# a path out of the repository: ../shared, /work/shared, or `... / 'shared'` built in code
OUTSIDE = re.compile(r"""\.\./shared|/work/shared|/\s*['"]shared['"]""")


def repo_files() -> list[str]:
    "The repository's files as git sees them: tracked, and untracked but not ignored (relative paths)."
    if shutil.which('git') is None or not (REPO/'.git').exists(): pytest.skip('not a git checkout')
    r = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                       capture_output=True, check=True)
    return sorted({f for f in r.stdout.decode().split('\0') if f and (REPO/f).is_file()})  # (deleted: no)


@pytest.fixture(scope='module')
def clone(tmp_path_factory) -> Path:
    "A copy of the repository's files in a folder of its own: nothing beside it."
    dest = tmp_path_factory.mktemp('alone')/'charrnn'
    for f in repo_files():
        (dest/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO/f, dest/f)
    assert [p.name for p in dest.parent.iterdir()] == ['charrnn']
    return dest


def test_the_copy_uses_its_own_package(clone):
    env = {**os.environ, 'PYTHONPATH': str(clone), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-c', 'import charrnn; print(charrnn.__file__)'], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and Path(r.stdout.strip()).parent == clone/'charrnn', r.stdout + r.stderr


def test_the_data_tests_pass_in_a_copy_with_nothing_beside_it(clone, tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(clone), 'OMP_NUM_THREADS': '1', 'PYTHONDONTWRITEBYTECODE': '1',
           'CHARRNN_CACHE': str(tmp_path/'cache')}
    env.pop('PYTEST_ADDOPTS', None)
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--basetemp', str(tmp_path/'tmp'),
           'tests/test_data.py']
    r = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''
    assert r.returncode == 0, f"{summary}\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert re.fullmatch(r'\d+ passed(, \d+ (skipped|warnings?))* in .*', summary), summary  # none failed


def test_no_code_reads_outside_the_repository():
    "No test, notebook, tool, benchmark or module builds a path to ../shared (the project's shared folder)."
    code = [f for f in repo_files() if f.split('/')[0] in ('tests', 'tools', 'nbs', 'bench', 'charrnn')
            and f.endswith(('.py', '.sh', '.ipynb')) and f != 'tests/test_standalone.py']
    assert {'tests/test_data.py', 'nbs/11_data.ipynb', 'nbs/11a_textcache.ipynb'} <= set(code)
    found = [f"{f}:{i}: {line.strip()[:100]}" for f in code
             for i, line in enumerate((REPO/f).read_text(errors='replace').splitlines(), 1)
             if OUTSIDE.search(line)]
    assert found == [], '\n'.join(found)
