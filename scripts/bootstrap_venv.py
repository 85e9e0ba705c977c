"""Create ``.venv`` with a working pip, even where Debian left out ``ensurepip``.

Debian's python3 ships without ``ensurepip`` unless ``python3-venv`` is installed; rather than
asking for root, we create the venv without pip and install pip from its PyPI wheel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import venv
from pathlib import Path


def main(target: str = ".venv") -> int:
    """Create the venv at ``target`` unless it already has pip."""
    root = Path(target)
    python = root / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0
    ):
        return 0
    try:
        venv.create(root, with_pip=True, clear=True)
        return 0
    except (subprocess.CalledProcessError, OSError, SystemExit) as exc:
        # Debian's stub ensurepip exits instead of raising.
        print(f"ensurepip unavailable ({exc}); installing pip from PyPI", file=sys.stderr)
    venv.create(root, with_pip=False, clear=True)
    index = "https://pypi.org/pypi/pip/json"
    with urllib.request.urlopen(index, timeout=60) as response:
        release = json.load(response)
    wheel = next(u for u in release["urls"] if u["filename"].endswith(".whl"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / wheel["filename"]
        # Mirrors may answer with relative URLs.
        url = urllib.parse.urljoin(index, wheel["url"])
        with urllib.request.urlopen(url, timeout=120) as response:
            path.write_bytes(response.read())
        # A pip wheel can run itself: ``python pip.whl/pip install pip.whl``.
        subprocess.run([python, f"{path}/pip", "install", "--no-index", str(path)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
