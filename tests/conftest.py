"""Shared test set-up.

Tests that run DVC stages start subprocesses (``dvc``, and the stages' ``python``): put this
interpreter's directory first on PATH so they use the same environment as pytest, whether
or not the virtual environment was activated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
