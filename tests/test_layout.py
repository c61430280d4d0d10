"""The library stays a library: importing it pulls in no workbench module and no plotting, and
every method keeps its code and its card together."""

import subprocess
import sys
from pathlib import Path

import frostline

ROOT = Path(__file__).resolve().parents[1]


def test_import_frostline_pulls_in_no_workbench_module_and_no_matplotlib():
    code = ("import sys, frostline, frostline.integrations.composer, frostline.exploit.cache; "
            "print('\\n'.join(sorted(m for m in sys.modules if m.startswith(('frostline.lab', 'matplotlib')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", out.stdout


def test_every_registered_method_has_its_card_beside_its_code():
    policies = ROOT / "frostline" / "policies"
    for name in frostline.list_policies():
        if name == "none":
            continue
        folder = policies / name.replace("-", "_")
        assert (folder / "__init__.py").exists(), f"{name}: no folder {folder}"
        card = folder / "README.md"
        assert card.exists() and card.stat().st_size > 500, f"{name}: no method card {card}"
