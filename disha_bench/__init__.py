"""disha-bench: does DiSHA (Bone, Bat) really converge faster than LoRA?

    disha-bench run suites/smoke.yaml
"""

__version__ = "0.1.0"
