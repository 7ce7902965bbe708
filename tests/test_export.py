"""The package is what the notebooks export: `nbdev_export` on the notebooks changes nothing in charrnn/, and
charrnn/ holds no module that no notebook exports (a notebook deleted or renamed leaves its old module behind,
and nbdev_export never removes it)."""
import filecmp, json, re, shutil, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# written by hand or by nbdev itself, not exported from a notebook's cells
NOT_EXPORTED = {'__init__.py', '__main__.py', '_modidx.py'}


def test_export_is_up_to_date(tmp_path):
    for name in ('settings.ini', 'setup.py'): shutil.copy(REPO/name, tmp_path/name)
    skip = shutil.ignore_patterns('runs', '.ipynb_checkpoints', '_*')
    shutil.copytree(REPO/'nbs', tmp_path/'nbs', ignore=skip)
    pkg = tmp_path/'charrnn'
    shutil.copytree(REPO/'charrnn', pkg, ignore=shutil.ignore_patterns('__pycache__', 'models', 'corpora'))
    exporter = Path(sys.executable).parent/'nbdev_export'
    subprocess.run([str(exporter)], cwd=tmp_path, check=True, capture_output=True)
    # _modidx.py too: the docs' links come from it, and only nbdev_export writes it (not tools/build_docs.py)
    cmp = filecmp.dircmp(REPO/'charrnn', pkg, ignore=['__pycache__', 'models', 'corpora'])
    def differing(c, prefix=''):
        out = [prefix + f for f in c.diff_files + c.left_only + c.right_only]
        for name, sub in c.subdirs.items(): out += differing(sub, f'{prefix}{name}/')
        return out
    changed = differing(cmp)
    assert not changed, f"nbdev_export changes these files (run nbdev_export and commit): {changed}"


def exported_modules() -> set[str]:
    "The module files the notebooks export to (`#| default_exp x.y` -> `x/y.py`, relative to charrnn/)."
    mods = set()
    for nb in (REPO/'nbs').rglob('*.ipynb'):
        if any(part.startswith(('_', '.')) for part in nb.relative_to(REPO/'nbs').parts): continue
        for cell in json.loads(nb.read_text(encoding='utf-8'))['cells']:
            if cell['cell_type'] != 'code': continue
            if m := re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(cell['source']), re.MULTILINE):
                mods.add(m[1].replace('.', '/') + '.py')
    return mods


def test_every_module_comes_from_a_notebook():
    pkg = REPO/'charrnn'
    present = {p.relative_to(pkg).as_posix() for p in pkg.rglob('*.py') if '__pycache__' not in p.parts}
    stale = sorted(present - exported_modules() - NOT_EXPORTED)
    assert not stale, f'modules no notebook exports (left by a deleted or renamed notebook? delete): {stale}'
    missing = sorted(exported_modules() - present)
    assert not missing, f'modules the notebooks export but charrnn/ lacks (run nbdev_export): {missing}'
