"""Studies: commands that measure the classic papers' claims and write a report (`cnnzoo study NAME`).

Each study is one module here that registers itself (`_registry.py`); its report lands in reports/NAME/.
"""

from ._registry import Study, get_study, list_studies, register_study

__all__ = ["Study", "get_study", "list_studies", "register_study"]
