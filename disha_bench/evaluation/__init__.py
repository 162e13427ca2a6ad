"""Evaluation machinery the tasks use: the generation pool, the vLLM engine, lm-eval, and running
model-written code in the sandbox.
"""
