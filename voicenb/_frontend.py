"""Which front end is attached: a notebook's browser, a terminal, or nothing.

One place for the question llm (how to show a stream), tts (where to play) and the widgets
(whether a browser can answer) all ask, decided as tqdm's ``autonotebook`` decides.
"""

from __future__ import annotations

import os
import sys

__all__ = ["in_notebook", "browser_attached", "kind"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, JupyterLab, VS Code, nbclient)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def kind() -> str:
    """``"notebook"``, ``"terminal"`` (an interactive console) or ``"none"`` (a script with
    its output redirected, a service)."""
    if in_notebook():
        return "notebook"
    stream = sys.stdout
    return "terminal" if stream is not None and stream.isatty() else "none"


def browser_attached() -> bool:
    """True in a kernel a person is looking at: started by a Jupyter server for a notebook
    (JupyterLab, Notebook 7), by VS Code, or in Colab. False in a kernel run headless
    (nbclient, papermill, ``jupyter nbconvert --execute``), where nobody can press Record."""
    if not in_notebook():
        return False
    if os.environ.get("JPY_SESSION_NAME") or "google.colab" in sys.modules:
        return True
    return any(name.startswith(("VSCODE_", "COLAB_")) for name in os.environ)
