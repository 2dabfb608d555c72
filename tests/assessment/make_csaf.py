"""Write the CSAF 2.0 test advisories in tests/assessment/csaf/ (made-up vendors and
products: ``assessment/samples.py``, the demo's advisory set; every document passes the CSAF
2.0 schema and mandatory tests, checked by tests/assessment/test_advisories.py). Run from the
repository root after changing the table there:

    .venv/bin/python tests/assessment/make_csaf.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "csaf"
sys.path.insert(0, str(HERE.parents[2]))

from assessment.samples import write  # noqa: E402


def main() -> None:
    print(f"{len(write(HERE))} advisories in {HERE}")


if __name__ == "__main__":
    main()
