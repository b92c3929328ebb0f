"""Human-readable figures: bytes, parameter counts, rates."""

from __future__ import annotations


def format_bytes(n: int | float) -> str:
    """Decimal units, as disk and download sizes are usually shown: "98.8 MB"."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_gb(n: int | float) -> str:
    """Memory as SEED-API.md's health check shows it: "2.1GB" (binary gigabytes);
    below one gigabyte in megabytes, "312MB", so small figures stay readable."""
    gib = n / 1024**3
    if gib >= 1:
        return f"{gib:.1f}GB"
    return f"{n / 1024**2:.0f}MB"


def format_params(n: int) -> str:
    """A parameter count as models name it: "135M", "7.2B"."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


def format_count(n: int | None) -> str:
    """A download or like count, short: "5.0k", "1.2M"; "-" when unknown."""
    if n is None:
        return "-"
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def format_time_left(seconds: float | None) -> str:
    """A time left, as a progress bar shows it: "42s", "3:05", "1h07m"; "--" when unknown."""
    if seconds is None:
        return "--"
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 60}:{whole % 60:02d}" if whole >= 60 else f"{whole}s"
