"""The heads: scikit-learn estimators fitted on pooled features (registry, dense, linear, SVM), their transforms, C search and frozen fold models."""
