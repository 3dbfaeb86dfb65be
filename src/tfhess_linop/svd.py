"""SVD (placeholder; being written)."""


def svds(*args, **kwargs):
    raise NotImplementedError

def randomized_svd(*args, **kwargs):
    raise NotImplementedError
