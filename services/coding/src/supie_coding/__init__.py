"""Supie coding service: build and test logs turned into insights a badge can show (SPEC §8).

Badges (or ``supie coding pipe`` on a developer's machine) stream ``coding`` events through the
gateway; the service keeps each device's last lines in Redis, extracts signals locally (failing
tests, missing modules, compile errors, OOM, timeouts, network errors, lint), and pushes short
``insight`` messages (debounced) and one ``summary`` after ``stop`` to the sender and the other
online badges of its group. An OpenAI-compatible LLM may phrase them; the local result stands
whenever the LLM's answer is not strictly the expected JSON, echoes the log, or says less.
"""

__all__: list[str] = []
