"""``%%task --after/--retries/--retry-delay/--retry-backoff`` and ``%task cancel`` with
dependents, through a real IPython shell (see test_magics.py for the harness)."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from test_magics import extension, finish, ip, outputs, text_of

import task_worker

__all__ = ["ip"]  # the fixture, used by name


def test_after_waits_for_the_named_cells_and_retries_rerun_the_body(ip: Any, capsys: Any) -> None:
    ip.user_ns["chain_calls"] = []
    with extension(ip) as m:
        ip.run_cell_magic("task", "-n chain_load", "chain_calls.append('load')\n'data'")
        ip.run_cell_magic("task", "-n chain_clean", "chain_calls.append('clean')")
        body = ("chain_calls.append('train')\n"
                "if chain_calls.count('train') < 3:\n"
                "    raise ConnectionError(f\"flaky {chain_calls.count('train')}\")\n"
                "chain_trained = 'yes'  # a retried attempt's names reach the notebook too\n"
                "print('trained')\n'model'")
        ip.run_cell_magic("task", "-n chain_train --after chain_load,chain_clean --retries 3 "
                          "--retry-delay 0 --retry-backoff 1.5", body)
        info = task_worker.get_worker().get_task_info("chain_train")
        assert info is not None and info.depends_on == ("chain_load", "chain_clean")
        assert info.max_attempts == 4
        info = finish("chain_train")
        assert info.status == "completed" and info.result == "model" and info.attempt == 3
        assert info.attempt_errors == ("ConnectionError: flaky 1", "ConnectionError: flaky 2")
        assert ip.user_ns["chain_calls"][-3:] == ["train", "train", "train"]
        assert set(ip.user_ns["chain_calls"][:2]) == {"load", "clean"}
        assert "trained" in text_of(outputs(m, "chain_train"))
        assert ip.user_ns["chain_trained"] == "yes"


def test_plain_cell_makes_a_plain_task(ip: Any) -> None:
    with extension(ip):
        ip.run_cell_magic("task", "-n chain_plain", "1")
        info = finish("chain_plain")
        assert info.chain is None


@pytest.mark.parametrize(("line", "match"), [
    ("-n chain_bad --after chain_nowhere", "no task with id or name 'chain_nowhere'"),
    ("-n chain_bad --after ,", "--after needs task names"),
    ("-n chain_bad --retries -1", "retries must be >= 0"),
    ("-n chain_bad --retries 2 --retry-delay -3", "retry_delay"),
    ("-n chain_bad --retries 2 --retry-backoff 0.5", "retry_backoff"),
    ("-n chain_bad --retry-delay 3", "--retry-delay needs --retries"),
    ("-n chain_bad --retries 1 --retry-on NoSuchError", "no exception named 'NoSuchError'"),
    ("-n chain_bad --retries 1 --retry-on len", "retry_on must be an exception type"),
    ("-n chain_bad --retries 1 --retry-on 3x", "needs exception names"),
    ("-n chain_bad --retry-on KeyError", "--retry-on needs --retries"),
])
def test_bad_chain_options_are_usage_errors_and_create_nothing(ip: Any, line: str, match: str) -> None:
    with extension(ip):
        before = len(task_worker.get_worker())
        with pytest.raises(UsageError, match=match):
            ip.run_cell_magic("task", line, "1")
        assert "chain_bad" not in task_worker.get_worker()
        assert len(task_worker.get_worker()) == before


def test_task_cancel_prints_the_dependents_it_cancels(ip: Any, capsys: Any) -> None:
    ip.user_ns["chain_gate"] = __import__("threading").Event()
    with extension(ip):
        ip.run_cell_magic("task", "-n chain_download", "chain_gate.wait(30)")
        ip.run_cell_magic("task", "-n chain_parse --after chain_download", "1")
        ip.run_cell_magic("task", "-n chain_fit --after chain_parse", "2")
        capsys.readouterr()
        ip.run_line_magic("task", "result chain_fit")  # says what it waits for
        assert "task 'chain_fit' is pending, waiting for chain_parse" in capsys.readouterr().out
        ip.run_line_magic("task", "cancel chain_download")
        out = capsys.readouterr().out
        assert "cancelled 1 task(s): chain_download" in out
        assert "and 2 task(s) waiting on them: chain_parse, chain_fit" in out
        ip.user_ns["chain_gate"].set()
        assert finish("chain_download").status == "cancelled"
        worker = task_worker.get_worker()
        parse = worker.get_task_info("chain_parse")
        assert parse is not None and parse.error == "cancelled: dependency 'chain_download' was cancelled"
        ip.run_line_magic("task", "list")
        listed = capsys.readouterr().out
        assert "cancelled" in listed and "chain_fit" in listed


def test_retry_on_names_the_exceptions_to_retry(ip: Any) -> None:
    ip.user_ns["chain_attempts"] = []
    ip.user_ns["chain_errors"] = __import__("types").SimpleNamespace(Flaky=ConnectionResetError)
    body = "chain_attempts.append(1)\nraise ValueError('bad input')"
    with extension(ip):
        ip.run_cell_magic("task", "-n chain_only_key --retries 2 --retry-delay 0 --retry-on KeyError",
                          body)
        assert finish("chain_only_key").attempt == 1
        ip.run_cell_magic("task", "-n chain_value --retries 2 --retry-delay 0 "
                          "--retry-on chain_errors.Flaky,ValueError", body)
        info = finish("chain_value")
        assert info.status == "failed" and info.attempt == 3
        assert info.attempt_errors == ("ValueError: bad input",) * 3
    assert len(ip.user_ns["chain_attempts"]) == 4
