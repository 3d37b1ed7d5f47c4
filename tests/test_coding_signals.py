"""The coding service's local analysis: text normalisation, each signal extractor on small
inputs, and the committed corpus of real-looking logs (``tests/fixtures/coding/*.log``, each
with its expected signals, outcome and insight mentions in ``<name>.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from supie_coding.body import ECHO_MIN_CHARS, InsightBody, Limits, clip, echoes, finish
from supie_coding.heuristics import RunStats, current, key_facts, local_insight, outcome
from supie_coding.normalize import normalize_text
from supie_coding.signals import (
    Kind,
    LogLine,
    Signal,
    build,
    compile_errors,
    counts,
    extract_all,
    failing_tests,
    imports,
    lint,
    network,
    notes,
    oom,
    timeouts,
    tracebacks,
)
from supie_coding.signals.model import lines_with

CORPUS = Path(__file__).parent / "fixtures" / "coding"
CASES = sorted(p.stem for p in CORPUS.glob("*.log"))


def log(*texts: str) -> list[LogLine]:
    return [LogLine(normalize_text(t, 512)) for t in texts if normalize_text(t, 512)]


def corpus_lines(name: str) -> list[LogLine]:
    return log(*(CORPUS / f"{name}.log").read_text(encoding="utf-8").splitlines())


def matches(signal: Signal, expected: dict[str, Any]) -> bool:
    actual = signal.as_dict()
    return all(actual.get(k) == v for k, v in expected.items())


def meaningful_lines(lines: list[LogLine]) -> list[str]:
    """The lines an item must never repeat: (as in the product) of several words and at least
    ECHO_MIN_CHARS long for containment; every line for equality."""
    return [line.text for line in lines]


# -- normalisation ------------------------------------------------------------------------------


def test_normalize_collapses_whitespace_strips_fences_colours_and_controls() -> None:
    raw = "```python\n  \x1b[31mFAILED\x1b[0m   tests/x.py::t\t-  boom\r\n```\x07"
    assert normalize_text(raw, 512) == "FAILED tests/x.py::t - boom"
    assert normalize_text("~~~\n \n~~~", 512) == ""
    assert normalize_text("   ", 512) == ""


def test_normalize_cuts_on_code_points_never_inside_a_character() -> None:
    text = "错" * 600 + "end"
    out = normalize_text(text, 512)
    assert len(out) == 512
    out.encode("utf-8")  # valid UTF-8 throughout
    emoji = "🙂" * 513
    assert normalize_text(emoji, 512) == "🙂" * 512
    assert normalize_text("ab\ud800cd", 512) == "abcd"  # a lone surrogate is not UTF-8


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("already clean: one space", "already clean: one space"),
        ("ünïcode 错误 stays", "ünïcode 错误 stays"),
        ("two  spaces", "two spaces"),
        (" leading", "leading"),
        ("trailing ", "trailing"),
        ("no\u00a0break", "no break"),  # Unicode whitespace is collapsed too
        ("em\u2003space", "em space"),
        ("line\u2028sep", "line sep"),
        ("tab\there", "tab here"),
        ("bell\x07gone", "bellgone"),
        ("del\x7fgone", "delgone"),
    ],
)
def test_normalize_clean_lines_and_every_kind_of_whitespace(raw: str, expected: str) -> None:
    # a clean line takes a shortcut; anything else the full treatment: both must agree
    assert normalize_text(raw, 512) == expected
    assert normalize_text(raw, 5) == expected[:5].rstrip()


def test_clip_keeps_items_short_at_a_word_boundary() -> None:
    long = "word " * 60
    out = clip(long, 50)
    assert len(out) <= 50 and out.endswith("…")
    assert clip("short one", 50) == "short one"


# -- extractors, one by one ---------------------------------------------------------------------


def test_pytest_verbose_and_error_lines_name_the_test() -> None:
    found = failing_tests.extract(
        log(
            "tests/test_api.py::test_create PASSED",
            "tests/test_api.py::test_delete FAILED",
            "ERROR tests/test_db.py::test_migrate - sqlite3.OperationalError: no such table",
        )
    )
    names = {(s.subject, s.file, s.code) for s in found}
    assert ("test_delete", "tests/test_api.py", "") in names
    assert ("test_migrate", "tests/test_db.py", "error") in names


def test_pytest_class_tests_are_one_finding_not_two() -> None:
    found = failing_tests.extract(
        log(
            "______ TestCart.test_total ______",
            "E   assert 1 == 2",
            "tests/test_cart.py:12: AssertionError",
            "FAILED tests/test_cart.py::TestCart::test_total - assert 1 == 2",
        )
    )
    assert len(found) == 1
    assert found[0].line == 12 and found[0].message == "assert 1 == 2"


def test_unittest_older_format_without_the_method_in_parentheses() -> None:
    found = failing_tests.extract(log("FAIL: test_x (pkg.test_mod.Case)", "AssertionError: 1 != 2"))
    assert found[0].subject == "pkg.test_mod.Case.test_x"
    assert found[0].message == "AssertionError: 1 != 2"


def test_jest_verbose_cross_and_go_and_cargo_old_panic() -> None:
    jest = failing_tests.extract(log("FAIL src/a.test.js", "✕ adds two numbers (4 ms)"))
    assert jest[0].subject == "adds two numbers" and jest[0].file == "src/a.test.js"
    old = failing_tests.extract(
        log(
            "test math::adds ... FAILED",
            "thread 'math::adds' panicked at 'attempt to add with overflow', src/math.rs:7:5",
        )
    )
    assert (old[0].file, old[0].line, old[0].message) == (
        "src/math.rs",
        7,
        "attempt to add with overflow",
    )


def test_counts_for_every_runner() -> None:
    found = {
        s.tool: s.counts
        for s in counts.extract(
            log(
                "===== 3 failed, 10 passed, 2 skipped, 1 error in 2.0s =====",
                "Ran 7 tests in 0.1s",
                "OK (skipped=2)",
                "Tests:       2 failed, 5 passed, 7 total",
                "test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured",
                "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured",
                "--- PASS: TestA (0.00s)",
                "--- SKIP: TestB (0.00s)",
            )
        )
    }
    assert found["pytest"] == {"failed": 3, "passed": 10, "skipped": 2, "errors": 1}
    assert found["unittest"] == {"passed": 5, "skipped": 2}
    assert found["jest"] == {"failed": 2, "passed": 5}
    assert found["cargo"] == {"passed": 6, "failed": 1, "skipped": 1}
    assert found["go"] == {"passed": 1, "skipped": 1}


def test_a_later_pytest_summary_supersedes_the_earlier_one() -> None:
    found = counts.extract(log("=== 1 failed, 2 passed in 1s ===", "=== 3 passed in 1s ==="))
    assert [s.counts for s in found] == [{"passed": 3}]


def test_import_errors_in_every_ecosystem() -> None:
    found = {
        (s.tool, s.subject)
        for s in imports.extract(
            log(
                'File "/srv/app/main.py", line 3, in <module>',
                "ModuleNotFoundError: No module named 'yaml'",
                "ImportError: cannot import name 'soft_unicode' from 'markupsafe'",
                "Error: Cannot find module 'express'",
                "Module not found: Error: Can't resolve './Button' in '/app/src'",
                "main.go:4:2: no required module provides package github.com/x/y; to add it:",
                "error[E0433]: failed to resolve: use of undeclared crate or module `tokio`",
            )
        )
    }
    assert found >= {
        ("python", "yaml"),
        ("python", "soft_unicode from markupsafe"),
        ("node", "express"),
        ("webpack", "./Button"),
        ("go", "github.com/x/y"),
        ("rust", "tokio"),
    }


def test_compile_errors_tsc_pretty_mypy_linker_go() -> None:
    found = compile_errors.extract(
        log(
            "src/app.ts:12:5 - error TS2345: Argument of type 'number' is not assignable.",
            "src/app.py:40: error: Incompatible return value type  [return-value]",
            "/usr/bin/ld: main.o: in function `main': main.c:(.text+0x1a): undefined "
            "reference to `helper'",
            "server/handler.go:12:2: undefined: renderJSON",
            "src/x.ts(3,22): error TS2307: Cannot find module 'lodash'",  # imports' job
        )
    )
    got = {(s.tool, s.file, s.line, s.code) for s in found}
    assert ("typescript", "src/app.ts", 12, "TS2345") in got
    assert ("mypy", "src/app.py", 40, "return-value") in got
    assert ("go", "server/handler.go", 12, "") in got
    assert any(s.tool == "linker" and s.subject == "helper" for s in found)
    assert not any(s.code == "TS2307" for s in found)


def test_tracebacks_prefer_the_projects_own_frame_and_leave_assertions_to_tests() -> None:
    found = tracebacks.extract(
        log(
            "Traceback (most recent call last):",
            'File "/home/me/proj/app/views.py", line 88, in render',
            'File "/usr/lib/python3.12/site-packages/jinja2/environment.py", line 1301, in x',
            "AttributeError: 'NoneType' object has no attribute 'title'",
            "Traceback (most recent call last):",
            'File "/home/me/proj/tests/test_a.py", line 5, in test_a',
            "AssertionError: nope",
        )
    )
    assert len(found) == 1
    assert (found[0].subject, found[0].file, found[0].line) == (
        "AttributeError",
        "app/views.py",
        88,
    )


def test_go_panic_and_node_uncaught_error() -> None:
    found = tracebacks.extract(
        log(
            "panic: runtime error: index out of range [3] with length 3",
            "goroutine 1 [running]:",
            "main.pick(...)",
            "/home/me/app/main.go:12 +0x1d",
            "TypeError: Cannot read properties of undefined (reading 'id')",
            "at handler (/srv/api/src/routes.js:14:22)",
        )
    )
    got = {(s.tool, s.file, s.line) for s in found}
    assert ("go", "app/main.go", 12) in got
    assert ("node", "src/routes.js", 14) in got


@pytest.mark.parametrize(
    ("line", "tool"),
    [
        (
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            "node",
        ),
        ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "cuda"),
        ("MemoryError", "python"),
        ("Killed", "shell"),
        ("error Command failed with exit code 137.", "exit"),
        ("Last State: Terminated Reason: OOMKilled", "kubernetes"),
    ],
)
def test_oom_in_its_many_words(line: str, tool: str) -> None:
    found = oom.extract(log(line))
    assert len(found) == 1 and found[0].tool == tool


def test_oom_keeps_the_most_informative_report() -> None:
    found = oom.extract(
        log("Killed", "Out of memory: Killed process 77 (node) total-vm:1kB", "exit status 137")
    )
    assert [(s.tool, s.subject, s.code) for s in found] == [("kernel", "node", "77")]


def test_timeouts_of_tests_requests_and_go() -> None:
    found = timeouts.extract(
        log(
            "requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='api.example.com', "
            "port=443): Read timed out. (read timeout=10)",
            "panic: test timed out after 2m0s",
            "running tests:",
            "TestSlowSync (2m0s)",
            "● sync › uploads",
            'thrown: "Exceeded timeout of 5000 ms for a test.',
        )
    )
    got = {(s.tool, s.subject, s.code) for s in found}
    assert ("request", "api.example.com", "") in got
    assert ("go", "TestSlowSync", "2m0s") in got
    assert ("jest", "sync › uploads", "5s") in got


def test_network_errors_name_the_host_and_the_kind() -> None:
    found = network.extract(
        log(
            "curl: (6) Could not resolve host: github.com",
            "dial tcp 10.0.0.5:6379: connect: connection refused",
            "Error: read ECONNRESET",
            "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
            "verify failed for https://pypi.internal/simple",
            "HTTP/1.1 503 Service Unavailable from https://api.example.com/v1",
        )
    )
    got = {(s.code, s.subject) for s in found}
    assert ("dns", "github.com") in got
    assert ("refused", "10.0.0.5:6379") in got
    assert ("reset", "") in got
    assert ("tls", "pypi.internal") in got
    assert ("http-503", "api.example.com") in got


def test_lint_pylint_and_summaries() -> None:
    found = lint.extract(
        log(
            "app/x.py:3:0: C0114: Missing module docstring (missing-module-docstring)",
            "/repo/web/src/a.ts",
            "  4:1  error  Unexpected var, use let or const instead  no-var",
            "✖ 1 problem (1 error, 0 warnings)",
        )
    )
    assert {(s.tool, s.code) for s in found} >= {
        ("pylint", "missing-module-docstring"),
        ("eslint", "no-var"),
        ("eslint", "summary"),
    }


def test_build_outcomes_and_steps() -> None:
    found = build.extract(
        [
            *log(
                "ninja: build stopped: subcommand failed.",
                "Error: Process completed with exit code 2.",
                "BUILD SUCCESSFUL in 12s",
            ),
            LogLine("step deploy: failed", kind="step", name="deploy", status="failed"),
            LogLine("step lint: ok", kind="step", name="lint", status="ok"),
        ]
    )
    got = [(s.kind, s.tool, s.subject, s.code) for s in found]
    assert (Kind.BUILD_FAILED, "ninja", "", "") in got
    assert (Kind.BUILD_FAILED, "ci", "", "2") in got
    assert (Kind.BUILD_OK, "gradle", "", "") in got
    assert (Kind.BUILD_FAILED, "step", "deploy", "failed") in got
    assert (Kind.BUILD_OK, "step", "lint", "") in got


def test_notes_keep_topic_words_not_the_sentence() -> None:
    found = notes.extract([LogLine("the login test fails on CI", level="note", kind="note")])
    assert found[0].subject == "login test fails ci"
    assert notes.topic_words("构建 失败 在 CI") == ["构建", "失败", "ci"]


def test_phase_and_step_lines_are_not_read_as_log_output() -> None:
    assert not [s for s in extract_all([LogLine("Killed", kind="phase")]) if s.kind is Kind.OOM]
    assert not extract_all([LogLine("step Out of memory: Killed process 1 (x)", kind="step")])


# -- the corpus -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_corpus_case_has_its_expectations(name: str) -> None:
    assert (CORPUS / f"{name}.json").exists(), f"{name}.log has no {name}.json"


@pytest.mark.parametrize("name", CASES)
def test_corpus_signals(name: str) -> None:
    expected = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
    found = extract_all(corpus_lines(name))
    for want in expected["signals"]:
        assert any(matches(s, want) for s in found), f"{name}: no signal {want} in {found}"
    if "outcome" in expected:
        assert outcome(current(found), RunStats()) == expected["outcome"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("summary", [False, True])
def test_corpus_insights(name: str, summary: bool) -> None:
    expected = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
    lines = corpus_lines(name)
    stats = RunStats(lines=len(lines), errors=3, running=not summary, duration_s=12.0)
    body = local_insight(lines, extract_all(lines), stats, Limits(), summary=summary)
    for field in ("insights", "risks", "actions", "next_steps"):
        items = getattr(body, field)
        assert items, f"{name}: {field} is empty"
        joined = " | ".join(items)
        for want in expected.get(field, []):
            assert want in joined, f"{name}: {field} lacks {want!r}: {items}"
        assert len(set(items)) == len(items)
        assert all(len(item) <= 110 for item in items)
    assert len(body.insights) <= 5 and len(body.risks) <= 4
    assert len(body.actions) <= 6 and len(body.next_steps) <= 6
    texts = meaningful_lines(lines)
    for item in body.items():
        assert item not in texts, f"{name}: item {item!r} is a log line"
        for line in texts:
            if len(line) >= ECHO_MIN_CHARS and " " in line:
                assert line not in item, f"{name}: item {item!r} repeats {line!r}"
    if summary:
        assert body.insights[0].startswith("Run ")


def test_echo_rule() -> None:
    lines = ["E assert 200 == 401", "Killed", "tests::withdraw_rejects_overdraft"]
    assert echoes("e   ASSERT 200 == 401", lines)  # case and spacing do not matter
    assert echoes("Because E assert 200 == 401 failed", lines)
    assert echoes("Killed", lines)
    assert not echoes("The process was Killed by the kernel", lines)  # a token, not a line
    assert not echoes("tests::withdraw_rejects_overdraft failed at src/lib.rs line 57", lines)


def test_finish_dedupes_across_lists_drops_echoes_and_applies_limits() -> None:
    body = InsightBody(
        insights=[
            "A thing",
            "a  thing",
            "FAILED tests/x.py::t - boom",
            *[f"i{n}" for n in range(9)],
        ],
        risks=["A thing.", "r"],
        actions=[],
        next_steps=["n"],
    )
    out = finish(body, ["FAILED tests/x.py::t - boom"], Limits(insights=3))
    assert out.insights == ["A thing", "i0", "i1"]
    assert out.risks == ["r"]


def test_stale_failures_before_a_later_success_are_dropped() -> None:
    lines = log(
        "FAILED tests/a.py::test_x - assert 1 == 2",
        "===== 1 failed, 3 passed in 1s =====",
        "===== 4 passed in 1s =====",
    )
    body = local_insight(lines, extract_all(lines), RunStats(lines=3), Limits())
    assert body.insights[0] == "All 4 tests passed"
    assert not any("test_x" in item for item in body.items())


def test_key_facts_name_tests_modules_files_hosts() -> None:
    lines = corpus_lines("network_error") + corpus_lines("python_import_error")
    facts = key_facts(extract_all(lines))
    assert {"redis", "test_insert_order", "127.0.0.1:5432"} <= set(facts)


def test_no_signals_still_fills_every_list() -> None:
    lines = log("Compiling module 3 of 9", "Downloading artefacts")
    body = local_insight(lines, extract_all(lines), RunStats(lines=2, running=True), Limits())
    assert body.insights == ["No errors so far"]
    assert body.risks and body.actions and body.next_steps


# -- the buffer-wide word search the extractors share -------------------------------------------


def test_lines_with_names_each_line_holding_a_word_once_in_order() -> None:
    lines = [LogLine(t) for t in ("a x", "b", "c xx x", "x", "", "ünï x")]
    assert lines_with(lines, ("x",)) == [0, 2, 3, 5]
    assert lines_with(lines, ("c", "b")) == [1, 2]
    assert lines_with(lines, ("a x\nb",)) == [0]  # across a line end: only ever too many
    assert lines_with(lines, ("zz",)) == []
    assert lines_with([], ("x",)) == []
