"""Newton-CG (placeholder; being written)."""


class NewtonCG:
    pass
