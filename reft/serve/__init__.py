"""Serve trained edits in vLLM: per-request ReFTs and steering vectors in one continuous batch.

Example:
    >>> from reft.serve import Server                                                   # doctest: +SKIP
    >>> server = Server("path/to/model", edits={"style": "runs/style"})                 # doctest: +SKIP
    >>> server.generate(["Hi!", "Hi!"], interventions=["style", None])                  # doctest: +SKIP

:class:`Server` (:mod:`reft.serve.server`) starts a vLLM engine in this process and serves named edits; each request
names its own. :mod:`reft.serve.edits` turns an edit (a saved ReFT folder, a ReftModel, a Steering) into the ops
that :mod:`interp.engine.vllm_edit` runs inside vLLM's forward, and computes the cache salt that keeps prefix
caching from sharing prefixes between requests with different edits. vLLM is an optional extra
(``pip install -e ".[serve]"``); importing this package does not import it.
"""

from .edits import as_edit, cache_salt, served_ops
from .server import Completion, Server

__all__ = ["Server", "Completion", "as_edit", "cache_salt", "served_ops"]
