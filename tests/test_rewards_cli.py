"""`rlpipe reward ...`: each grader prints its verdict and why; exit status 0 pass / 1 fail / 2 usage."""

import io
import json

import pytest

from rewards.cli import main

GOOD = "<think>2 + 3 = 5</think> <answer>5</answer>"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_format_pass_and_fail_with_reason(capsys):
    code, out, _ = run(capsys, "format", "--text", GOOD)
    assert code == 0 and "verdict: OK" in out and "tag_count_reward: 1.0" in out
    code, out, _ = run(capsys, "format", "--text", GOOD + " The answer is 5.")
    assert code == 1 and "BAD FORMAT" in out and "text after </answer>" in out


def test_format_prefilled_flag(capsys):
    completion = "2 + 3 = 5</think> <answer>5</answer>"
    assert run(capsys, "format", "--text", completion)[0] == 1
    assert run(capsys, "format", "--text", completion, "--prefilled")[0] == 0


def test_text_from_stdin_and_file(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD))
    assert run(capsys, "format", "--text", "-")[0] == 0
    path = tmp_path / "response.txt"
    path.write_text(GOOD, encoding="utf-8")
    assert run(capsys, "format", "--text-file", str(path))[0] == 0
    code, _, err = run(capsys, "format", "--text-file", str(tmp_path / "missing.txt"))
    assert code == 2 and "missing.txt" in err and "cannot read" in err


def test_language_reports_share_and_foreign_words(capsys):
    code, out, _ = run(capsys, "language", "--text", "<think>我们计算一下 then check</think>",
                       "--language", "zh", "--json")
    result = json.loads(out)
    assert code == 1  # 6/8 is below the mixing threshold
    assert result["language_reward"] == pytest.approx(0.75)
    assert result["foreign"] == ["then", "check"] and result["mixed"] is True
    code, out, _ = run(capsys, "language", "--text", "<think>首先计算两数之和</think>")
    assert code == 0 and "zh (detected)" in out
    code, _, err = run(capsys, "language", "--text", "x", "--language", "klingon")
    assert code == 2 and "klingon" in err


def test_countdown(capsys):
    code, out, _ = run(capsys, "countdown", "--text", "<answer>(25-5)*3</answer>",
                       "--numbers", "25", "5", "3", "--target", "60")
    assert code == 0 and "verdict: OK" in out
    code, out, _ = run(capsys, "countdown", "--text", "25*3", "--numbers", "25", "5", "--target", "60")
    assert code == 1 and "not given" in out


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "nope")[0] == 2
    assert run(capsys, "math", "--pred", "1")[0] == 2  # --gold missing
    assert run(capsys, "--help")[0] == 0


def test_rlpipe_command_dispatches_to_reward_cli(capsys):
    from rlpipe.cli import main as rlpipe_main

    assert rlpipe_main(["reward", "format", "--text", GOOD]) == 0
    assert "verdict: OK" in capsys.readouterr().out


# --- graders from rewards.math and rewards.code ------------------------------------------------


def test_math_verdict_and_explanation(capsys):
    pytest.importorskip("rewards.math")
    code, out, _ = run(capsys, "math", "--pred", "\\frac{1}{2}", "--gold", "0.5")
    assert code == 0 and "verdict: EQUAL" in out
    code, out, _ = run(capsys, "math", "--pred", "0.0000001", "--gold", "0.0000002")
    assert code == 1 and "verdict: NOT EQUAL" in out
    assert len(out.strip().splitlines()) >= 2  # the verdict plus the checker's reasons


def test_math_extracts_from_a_full_response(capsys):
    pytest.importorskip("rewards.math")
    code, out, _ = run(capsys, "math", "--pred", GOOD, "--gold", "5", "--extract")
    assert code == 0 and "extracted: 5" in out
    code, out, _ = run(capsys, "math", "--pred", "no answer here", "--gold", "5", "--extract")
    assert code == 1 and "no final answer" in out


@pytest.fixture
def add_problem(tmp_path):
    solution = tmp_path / "solution.py"
    solution.write_text("def add(a, b):\n    return a + b\n")
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def add(a, b):\n    return a - b\n")
    tests = tmp_path / "tests.py"
    tests.write_text("def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n")
    return solution, wrong, tests


def test_code_with_check_function(capsys, add_problem):
    pytest.importorskip("rewards.code")
    solution, wrong, tests = add_problem
    code, out, _ = run(capsys, "code", "--file", str(solution), "--tests", str(tests), "--entry-point", "add")
    assert code == 0 and "verdict: PASS" in out
    code, out, _ = run(capsys, "code", "--file", str(wrong), "--tests", str(tests), "--entry-point", "add")
    assert code == 1 and "verdict: FAIL" in out and "status:" in out


def test_code_with_json_stdin_cases(capsys, tmp_path):
    pytest.importorskip("rewards.code")
    solution = tmp_path / "echo.py"
    solution.write_text("a, b = map(int, input().split())\nprint(a * b)\n")
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"input": "2 3\n", "output": "6\n"}, {"input": "4 5\n", "output": "21\n"}]))
    code, out, _ = run(capsys, "code", "--file", str(solution), "--tests", str(cases))
    assert code == 1 and "passed: 1/2" in out


def test_code_input_errors_are_one_line(capsys, tmp_path, add_problem):
    solution, _, tests = add_problem
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "code", "--file", str(solution), "--tests", str(bad))
    assert code == 2 and "bad.json" in err and "invalid JSON" in err
    code, _, err = run(capsys, "code", "--file", str(solution), "--tests", str(tests))
    assert code == 2 and "--entry-point" in err
