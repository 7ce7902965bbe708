"""The package is what the notebooks export: `nbdev_export` on the committed notebooks changes nothing in charrnn/."""
import filecmp, shutil, subprocess, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_export_is_up_to_date(tmp_path):
    for name in ('settings.ini', 'setup.py'): shutil.copy(REPO/name, tmp_path/name)
    shutil.copytree(REPO/'nbs', tmp_path/'nbs', ignore=shutil.ignore_patterns('runs', '.ipynb_checkpoints', '_*'))
    pkg = tmp_path/'charrnn'
    shutil.copytree(REPO/'charrnn', pkg, ignore=shutil.ignore_patterns('__pycache__', 'models'))
    exporter = Path(sys.executable).parent/'nbdev_export'
    subprocess.run([str(exporter)], cwd=tmp_path, check=True, capture_output=True)
    cmp = filecmp.dircmp(REPO/'charrnn', pkg, ignore=['__pycache__', 'models', '_modidx.py'])
    def differing(c, prefix=''):
        out = [prefix + f for f in c.diff_files + c.left_only + c.right_only]
        for name, sub in c.subdirs.items(): out += differing(sub, f'{prefix}{name}/')
        return out
    assert not differing(cmp), f"nbdev_export changes these files (run nbdev_export and commit): {differing(cmp)}"
