"""The commands of the ``ocr-study`` CLI, one module each; :mod:`study.cli` parses and dispatches to them.

``run`` (``run``, ``resume``, each ending with the report), ``status``, ``ui``, ``report`` (``report``,
``export``), ``train`` and ``pseudo`` (``pseudo-masks``). They open a study once
(:mod:`study.handle`) and hand it to the engine (:mod:`study.runner`); the engine imports no command.
"""
