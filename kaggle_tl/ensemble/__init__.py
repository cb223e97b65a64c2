"""Ensembles: strategies that combine models' OOF predictions (nested CV) and ensembles across saved runs."""
