"""Entry points of metriclearn: absl-flag scripts and the ``reproduce`` main job."""

from __future__ import annotations

import os


def check_output_dir(path: str, flag: str) -> None:
    """Create the output directory ``path`` and check it is writable, before any work is done.

    Raises ``absl.app.UsageError`` naming ``flag`` (a file in the way, no permission), instead of a
    ``FileExistsError`` traceback after the computation.
    """
    from absl import app

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise app.UsageError(f"{flag}={path!r} cannot be created as a directory: {err}") from err
    if not os.access(path, os.W_OK):
        raise app.UsageError(f"{flag}={path!r} is not writable")


def exit_with_help(doc: str | None) -> None:
    """``--help``/``-h``: print the module docstring and its flags, exit 0 (absl's ``--help`` exits
    with status 1)."""
    from absl import flags

    print((doc or "").strip())
    print()
    print(flags.FLAGS.main_module_help())
    raise SystemExit(0)
