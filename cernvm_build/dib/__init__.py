"""diskimage-builder elements shipped with cernvm-build (ELEMENTS_PATH = ELEMENTS below)."""

from pathlib import Path

ELEMENTS = Path(__file__).with_name("elements")
