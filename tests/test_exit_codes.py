"""docs/exit-codes.md documents exactly the codes qwenocr/errors.py defines."""

import re
from pathlib import Path

from qwenocr.errors import ExitCode

DOC = Path(__file__).resolve().parents[1] / "docs" / "exit-codes.md"


def test_every_exit_code_is_documented_and_nothing_else():
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([A-Z_]+)\s*\|", DOC.read_text(), flags=re.MULTILINE)
    documented = {int(code): name for code, name in rows}
    assert documented == {int(code): code.name for code in ExitCode}
