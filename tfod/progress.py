"""How tfod shows numbers to a person: durations, step lines with an ETA, scores."""
from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``4m05s`` under an hour, ``1h07m`` from an hour on."""
    minutes, seconds = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def step_line(step: int, target: int, seconds_per_step: float) -> str:
    """``step 200/1000, 0.350 s/step, ETA 4m40s``."""
    eta = format_duration(max(target - step, 0) * seconds_per_step)
    return f"step {step}/{target}, {seconds_per_step:.3f} s/step, ETA {eta}"


def format_number(value, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals, ``n/a`` when missing (a JSON null)."""
    return "n/a" if value is None else f"{float(value):.{digits}f}"
