"""Regenerate docs/config.md from the config schema:  python tools/config_reference.py"""

from pathlib import Path

from visiontl.config import config_reference

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    out.write_text(config_reference(), encoding="utf-8")
    print(f"wrote {out}")
