"""Which group a device, a task or an HTTP query means (SPEC §7).

A device's group is given by the gateway (``DeviceInbound.group_key``) or, failing that, by the
config (``workflow.device_groups``, else the device id's first 8 characters). A group key a badge
or a client *writes* is normalised the way the firmware's backend did: a configured group name
matches case-insensitively and keeps its configured spelling; anything else is lower-cased and
cut to 8 characters, so a full device id names that device's default group.
"""

from __future__ import annotations

from supie_common.settings import WorkflowSection

__all__ = ["GROUP_KEY_LEN", "normalise_group", "sender_group", "resolve_listing"]

GROUP_KEY_LEN = 8


def normalise_group(key: str | None, config: WorkflowSection) -> str | None:
    """The group a written ``groupKey`` names, or None when it is blank."""
    if key is None:
        return None
    key = key.strip()
    if not key:
        return None
    folded = key.lower()
    for configured in config.device_groups.values():
        if configured.lower() == folded:
            return configured
    return folded[:GROUP_KEY_LEN]


def sender_group(device_id: str, given: str | None, config: WorkflowSection) -> str:
    """The sender's own group: what the gateway said, else the config's rule."""
    return given.strip() if given and given.strip() else config.group_of(device_id)


def resolve_listing(key: str, known: set[str], config: WorkflowSection) -> str:
    """The group an HTTP ``groupKey`` (a group key, or a longer id it is the prefix of) means:
    an existing group equal to it, else the longest existing group it starts with, else its
    normalised form (which may be an empty group)."""
    key = key.strip()
    if key in known:
        return key
    folded = key.lower()
    prefixes = [g for g in known if g and folded.startswith(g.lower())]
    if prefixes:
        return max(prefixes, key=len)
    return normalise_group(key, config) or key
