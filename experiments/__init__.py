"""Entry points of metriclearn: absl-flag scripts and the ``reproduce`` main job."""

from __future__ import annotations

import os
import tempfile


def check_output_dir(path: str, flag: str) -> None:
    """Check that the output directory ``path`` can be used, before any work is done (not created
    here: a run refused later for another reason leaves nothing behind).

    Raises ``absl.app.UsageError`` naming ``flag`` when a file is in the way or the directory (or
    the nearest existing parent it would be created in) is not writable, instead of a
    ``FileExistsError`` traceback after the computation. Writability is tried by creating and
    removing an empty directory there.
    """
    from absl import app

    if not str(path).strip():  # abspath("") is the working directory: a silent default
        raise app.UsageError(f"{flag} is empty; give the directory to write to")
    path = os.path.abspath(path)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise app.UsageError(
            f"{flag}={path!r} cannot be created as a directory: {probe!r} is a file"
        )
    # Try it rather than ask os.access: as root, access() says yes for any directory, /proc included.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".metriclearn-probe-", dir=probe))
    except OSError as err:
        raise app.UsageError(f"{flag}={path!r} is not writable ({probe!r}: {err})") from None


def exit_with_help(doc: str | None, full: bool = False) -> None:
    """``--help``/``-h``/``--helpshort``: print the module docstring and its flags; ``--helpfull``:
    every flag, absl's own included. Exit 0 (absl's help flags exit with status 1)."""
    from absl import flags

    print((doc or "").strip())
    print()
    print(flags.FLAGS.get_help() if full else flags.FLAGS.main_module_help())
    raise SystemExit(0)
