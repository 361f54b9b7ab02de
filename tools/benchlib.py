"""What every benchmark in tools/ reports the same way: the setting line (date, device, torch) and a
markdown table, printed and written with its rows as JSON."""

from __future__ import annotations

import os
import platform
from datetime import date
from pathlib import Path

import torch

from visiontl.engine.checkpoint import atomic_write_json, atomic_write_text


def device_label() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def report(out: Path, setting: str, header: list[str], cells: list[list[str]], rows: list[dict]) -> str:
    """Print and write out/results.md (setting line + table) and out/results.json (the raw rows)."""
    lines = [f"{date.today()}, {device_label()}, torch {torch.__version__}, {setting}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    table = "\n".join(lines)
    print("\n" + table)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_json(out / "results.json", rows)
    return table
