"""Tab completion: `charlstm --show-completion` prints the shell's script, and
`--install-completion` writes it to a file of charlstm's own, never into a user's file.

typer's own installer appends to ~/.bashrc or ~/.zshrc, rewriting the whole file in place
(a crash halfway would lose it); this one writes only the completion script, in the place
the shell looks for such scripts (bash and zsh: a folder named in the line it prints for
the user to add to their startup file; fish loads its folder by itself), and replaces a
file there only if it is charlstm's completion script. The shell is found as typer finds
it (the process tree), else from $SHELL.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ..data.files import write_atomically
from ..errors import UsageError

try:  # typer's shells, for answering completions (its own installer registered them)
    from typer._completion_classes import completion_init

    completion_init()
except ImportError:  # a typer without them: the command line works, completion does not
    pass

COMPLETE_VAR = "_CHARLSTM_COMPLETE"  # the variable typer's scripts set: what marks them
# where each shell's script goes (under the home folder), and what the user adds to
# their shell's startup file for it to be loaded (None: loaded as it is)
TARGETS = {
    "bash": (".bash_completions/charlstm.sh",
             ("~/.bashrc", "source ~/.bash_completions/charlstm.sh")),
    "zsh": (".zfunc/_charlstm",
            ("~/.zshrc", "fpath+=~/.zfunc; autoload -Uz compinit; compinit")),
    "fish": (".config/fish/completions/charlstm.fish", None),
}


def current_shell() -> str:
    """The shell charlstm runs in, as typer finds it (walking up the processes), else
    $SHELL's."""
    try:
        from typer._completion_shared import _get_shell_name

        shell = _get_shell_name() or ""
    except Exception:  # noqa: BLE001 - shellingham may be absent or fail: use $SHELL
        shell = ""
    shell = shell if shell in TARGETS else Path(os.environ.get("SHELL", "")).name
    if shell not in TARGETS:
        raise UsageError(f"completion is for {', '.join(TARGETS)}; the shell here "
                         f"({shell or 'unknown: $SHELL is not set'}) is none of them")
    return shell


def script(shell: str) -> str:
    try:
        from typer._completion_shared import get_completion_script
    except ImportError:
        raise UsageError("this version of typer offers no completion scripts") from None
    return get_completion_script(prog_name="charlstm", complete_var=COMPLETE_VAR,
                                 shell=shell)


def install(shell: str, home: Path) -> tuple[Path, tuple[str, str] | None]:
    """Write the completion script for `shell` under `home`; returns its path, and the
    startup file and line the user should add (None when the shell needs none)."""
    relative, startup = TARGETS[shell]
    target = home / relative
    if target.is_symlink() or (target.exists() and not _is_ours(target)):
        raise UsageError(f"{target} exists and is not charlstm's completion script, so "
                         "it is left as it is; print the script with --show-completion")
    try:
        write_atomically(target, script(shell).encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target, startup


def _is_ours(path: Path) -> bool:
    try:
        return COMPLETE_VAR in path.read_text("utf-8", errors="replace")
    except OSError:
        return False


def show_completion(value: bool) -> None:
    if value:
        print(script(current_shell()))
        raise typer.Exit()


def install_completion(value: bool) -> None:
    if not value:
        return
    target, startup = install(current_shell(), Path.home())
    print(f"charlstm: completion script written to {target}", file=sys.stderr)
    if startup is not None:
        rc_file, line = startup
        print(f"charlstm: to load it, add this line to {rc_file} (charlstm leaves that "
              f"file to you):\n{line}", file=sys.stderr)
    raise typer.Exit()
