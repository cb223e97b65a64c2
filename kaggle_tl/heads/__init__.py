"""The heads: scikit-learn estimators fitted on pooled features (registry, dense, linear, SVM), their transforms, C search and frozen fold models."""
from kaggle_tl.heads import dense, linear  # noqa: F401 -- importing a head module registers its heads
