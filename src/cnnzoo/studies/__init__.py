"""Studies: commands that measure the classic papers' claims and write a report (`cnnzoo study NAME`).

Each study is one module here that registers itself (`_registry.py`) when this package imports it; its
report lands in reports/NAME/.
"""

# Importing a study module registers its study (the registry imports none of them: they import it).
from . import architectures, augmentation, degradation, inception, lenet, transfer, vgg_stacks  # noqa: F401
from ._registry import Study, get_study, list_studies, register_study

__all__ = ["Study", "get_study", "list_studies", "register_study"]
