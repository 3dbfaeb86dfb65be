"""Command line (placeholder; being written)."""


def main(argv=None):
    raise NotImplementedError
