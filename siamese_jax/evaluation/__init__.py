"""Evaluation, in four modules:

- scoring: encode each distinct image once, score pairs and trials with the head, one-shot summaries;
- metrics: Wilson intervals, ROC AUC, the best threshold, accuracy at a threshold, cross-validation;
- score_norm: AS-norm against a cohort;
- evaluators: the validation evaluators that config.validation.evals names (EVALUATORS).
"""
