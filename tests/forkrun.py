"""Runs scripts as ``python scripts/NAME.py ARGS`` would, many of them from one interpreter: what the scripts import is
imported once here, then each run is a forked child with its own stdout, stderr, environment and exit status.

    python tests/forkrun.py < cases.json > results.json

``cases``: ``[{"script": path, "argv": [...], "env": {...}}]``; results: ``[{"code", "stdout", "stderr"}]`` in the
same order. Anything printed while importing (a library's warning) goes to this process's stderr, which the caller
checks too. For the tests of how the scripts end (tests/test_script_errors.py): dozens of interpreters would cost a
minute of imports.
"""
import json
import os
import runpy
import sys
import tempfile
import traceback


def _exit_code(err):
    """What the interpreter does with a ``SystemExit``: its int code, 0 for None, else print it and 1."""
    if err.code is None:
        return 0
    if isinstance(err.code, int):
        return err.code
    print(err.code, file=sys.stderr)
    return 1


def _child(script, argv, env):
    code = 1
    try:
        os.environ.update(env)
        sys.argv = [script, *argv]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as err:
            code = _exit_code(err)
        except BaseException:  # as the interpreter reports an uncaught exception
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run(script, argv, env):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            _child(script, argv, env)
        _, status = os.waitpid(pid, 0)
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
    return {"code": os.waitstatus_to_exitcode(status), "stdout": texts[0], "stderr": texts[1]}


def main():
    cases = json.load(sys.stdin)
    for script in sorted({c["script"] for c in cases}):  # its imports, not its main
        runpy.run_path(script, run_name="forkrun_preload")
    results = [run(c["script"], c["argv"], c.get("env", {})) for c in cases]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
