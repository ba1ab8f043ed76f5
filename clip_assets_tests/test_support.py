"""The harness's own behaviour that other tests rely on: waits that fail at once when told to, servers
that leave nothing behind, a GraphQL client that refuses an answer with errors."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clip_assets_tests.support.deployment import clean_environment, code_server_serving
from clip_assets_tests.support.graphql import DagsterGraphQL, GraphQLError
from clip_assets_tests.support.processes import ServerGroup, free_port, unavailable_here, wait_for
from clip_assets_tests.support.reliability import HAND_WRITTEN, Ledger

PYTHON = Path(sys.executable).name  # ServerProcess.start finds it beside the interpreter


class Probe:
    """Answers from a script, one per call; an exception in the script is raised instead."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> object:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_an_assertion_in_the_probe_fails_the_wait_at_once():
    probe = Probe(AssertionError("the run failed and will not be retried"))
    with pytest.raises(AssertionError, match="will not be retried"):
        wait_for(probe, 120, "a run that already failed", retry_on=(OSError,))
    assert probe.calls == 1


@pytest.mark.parametrize("ci", ["1", "true", "True"])
def test_a_missing_prerequisite_fails_under_ci_with_its_reason(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="no tmpfs here; CI must provide it"):
        unavailable_here("no tmpfs here")


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_a_missing_prerequisite_is_a_skip_on_a_workstation(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="no tmpfs here"):
        unavailable_here("no tmpfs here")


def test_only_the_errors_named_are_retried():
    probe = Probe(ConnectionRefusedError(), ConnectionResetError(), "up")
    assert wait_for(probe, 60, "a server", interval_s=0, retry_on=(OSError,)) == "up"
    assert probe.calls == 3
    unexpected = Probe(KeyError("boom"), "up")
    with pytest.raises(KeyError):
        wait_for(unexpected, 60, "a server", interval_s=0, retry_on=(OSError,))
    assert unexpected.calls == 1


def test_a_timeout_names_what_was_awaited_and_the_last_answer():
    probe = Probe(False)
    with pytest.raises(TimeoutError, match=r"waiting for the backfill \(last: False\)\nthe logs"):
        wait_for(probe, 0, "the backfill", context=lambda: "the logs")
    assert probe.calls == 1


def test_a_server_that_exits_fails_the_groups_wait_at_once_with_its_log(tmp_path):
    group = ServerGroup(clean_environment({}), tmp_path, tmp_path)
    group.start("quitter", [PYTHON, "-c", "print('giving up', flush=True); raise SystemExit(3)"])
    try:
        with pytest.raises(AssertionError, match=r"(?s)quitter exited with 3.*giving up"):
            group.wait(lambda: False, 120, "something the quitter never does")
    finally:
        group.stop()


def test_stopping_a_server_ends_its_whole_process_group(tmp_path):
    """A leader and a child that both ignore SIGINT: killed after the grace period, child and all."""
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
    leader = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        f"child = subprocess.Popen([sys.executable, '-c', {stubborn!r}]); print(child.pid, flush=True); time.sleep(600)"
    )
    group = ServerGroup(clean_environment({}), tmp_path, tmp_path)
    server = group.start("stubborn", [PYTHON, "-c", leader])
    child = wait_for(lambda: server.log_tail(1).strip(), 60, "the child's pid in the log")
    group.stop(timeout_s=1)
    assert server.popen.returncode is not None
    assert not alive(int(child)), f"child {child} of the stopped server still runs"


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_code_server_probe_says_no_when_nothing_listens():
    assert code_server_serving(free_port(), clean_environment({})) is False


@contextmanager
def answering(document: dict[str, object]) -> Iterator[str]:
    """A loopback HTTP server that answers every POST with `document`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("errors", [[{"message": "Cannot query field 'nope'"}], []])
def test_a_graphql_answer_with_errors_is_refused(errors):
    with answering({"data": {"ok": True}, "errors": errors}) as url, pytest.raises(GraphQLError):
        DagsterGraphQL(url)("{ nope }")
    with answering({"data": {"ok": True}}) as url:
        assert DagsterGraphQL(url)("{ ok }") == {"ok": True}


def test_regenerating_the_reliability_ledger_keeps_the_hand_written_part():
    ledger = Ledger()
    ledger.for_test("test_x").record("fault", "disk full", tried=1, handled=1, nothing_lost="checked")
    hand = f"{HAND_WRITTEN}\n\n## Deliberate bugs\n\n| bug | test |\n|---|---|\n| a | b |\n"
    once = ledger.markdown("# old ledger\n" + hand)
    twice = ledger.markdown(once)
    assert once == twice and once.count(HAND_WRITTEN) == 1
    assert once.endswith(hand) and "| disk full | 1 | 1 | checked | `test_x` |" in once
    assert "# old ledger" not in once
