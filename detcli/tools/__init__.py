"""Tool algorithms behind the CLI's utility commands, one layer above the engine.

``det optimize-anchors`` (:mod:`~detcli.tools.anchors`), ``det browse-dataset`` and ``det analyze-results``
(:mod:`~detcli.tools.browse`, :mod:`~detcli.tools.analysis`), ``det confusion-matrix``
(:mod:`~detcli.tools.analysis`), ``det benchmark model`` (:mod:`~detcli.tools.benchmark`) and
``det convert-checkpoint`` / ``det publish`` (:mod:`~detcli.tools.conversion`). They build on the engine
(builders, tester, checkpoints); the engine never imports them. Like the engine they compute and return or
write files; the CLI renders.
"""

from detcli.tools.analysis import AnalyzeResult, ConfusionResult, analyze_results, confusion_matrix

__all__ = ["AnalyzeResult", "ConfusionResult", "analyze_results", "confusion_matrix"]
