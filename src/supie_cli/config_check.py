"""The whole configuration, validated for every service before ``supie up`` starts any of them:
a bad ``asr.*`` value is a clear refusal at start, not a service restarting forever.

Two ways to ask a service whether it accepts the config: in this process, with the settings class
of the service's ``config`` module, or by running ``python -m supie_<service> --check-config``
(exit 0 = valid, 2 = invalid with the message on stderr), which also sees whatever the service
itself checks beyond its settings class. :data:`CHECK` picks one; the in-process one stays for
services without ``--check-config``."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from supie_common.settings import ConfigError, SupieSettings, load_settings

__all__ = ["check_configs", "check_in_process", "check_by_subprocess", "settings_class", "CHECK"]

Checker = Callable[[str, Path, Mapping[str, str]], Awaitable[str | None]]


def settings_class(service: str) -> type[SupieSettings] | None:
    """The settings class ``supie_<service>.config`` defines, if there is one."""
    try:
        module = importlib.import_module(f"supie_{service}.config")
    except ImportError:
        return None
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, SupieSettings) and obj.__module__ == module.__name__:
            return obj
    return None


async def check_in_process(service: str, config: Path, env: Mapping[str, str]) -> str | None:
    """None when ``service`` accepts the config (file + this process's ``SUPIE_*`` variables)."""

    def validate() -> str | None:
        cls = settings_class(service)  # imports the service's package: off the event loop
        if cls is None:
            return None
        try:
            load_settings(cls, config)
        except ConfigError as exc:
            return str(exc)
        return None

    return await asyncio.to_thread(validate)


async def check_by_subprocess(service: str, config: Path, env: Mapping[str, str]) -> str | None:
    """None when ``python -m supie_<service> --check-config`` exits 0 under ``env``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"supie_{service}",
        "--check-config",
        str(config),
        env=dict(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode == 0:
        return None
    text = err.decode(errors="replace").strip().splitlines()
    return text[-1] if text else f"--check-config exited with {proc.returncode}"


#: Each service's own ``--check-config``: it sees everything the service checks at start.
CHECK: Checker = check_by_subprocess


async def check_configs(
    services: list[str], config: Path, env: Mapping[str, str], check: Checker | None = None
) -> list[str]:
    """``"<service>: <why>"`` for every service that refuses the config (empty: all accept)."""
    checker = check or CHECK
    results = await asyncio.gather(*(checker(name, config, env) for name in services))
    problems = []
    for name, why in zip(services, results, strict=True):
        if why is not None:
            problems.append(why if why.startswith(f"{name}:") else f"{name}: {why}")
    return problems
