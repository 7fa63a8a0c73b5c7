"""Running a benchmark module of this package in another process, whatever the working folder.

An entry script run as a file (``python benchmarks/latency.py``) has no package, so its relative imports would fail;
its first lines hand over to :func:`run_as_module`, which replaces the process with
``python -m benchmarks.latency`` and the repository root on ``PYTHONPATH`` (no ``sys.path`` edits)::

    if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.<name>
        import _launch  # the script's folder is sys.path[0] when Python runs a file
        _launch.run_as_module(__file__)

So this module imports nothing of the package (it is imported as ``_launch`` there, as ``benchmarks._launch``
elsewhere) and nothing but the standard library. :func:`module_env` also gives the processes a benchmark starts
(peer workers, measurement children) the same root.
"""
import os
import sys

PACKAGE = "benchmarks"
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # the folder holding this package


def module_env(env=None):
    """``env`` (default: this process's environment) with :data:`ROOT` first on ``PYTHONPATH``: ``benchmarks`` and
    the library beside it import from this checkout in a child, whatever its working folder."""
    env = dict(os.environ if env is None else env)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT]
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *rest])
    return env


def module_command(name, python=None):
    """The command line that runs ``benchmarks.<name>`` under ``python`` (default: this interpreter); give the
    child :func:`module_env`."""
    return [python or sys.executable, "-m", f"{PACKAGE}.{name}"]


def run_as_module(path, argv=None):
    """Replaces this process (``os.execve``: same pid, standard streams and arguments; the exit status is the
    module's) with ``python -m benchmarks.<name of path> ARGV``, the root importable through :func:`module_env`.
    Python >= 3.11 gets ``-P``: the working folder stays off ``sys.path``, as when a file runs, so a ``benchmarks``
    folder there cannot stand in for this one."""
    name = os.path.splitext(os.path.basename(path))[0]
    argv = sys.argv[1:] if argv is None else list(argv)
    command = module_command(name)
    if sys.version_info >= (3, 11):
        command.insert(1, "-P")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command + argv, module_env())
